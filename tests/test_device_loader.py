import numpy as np
import pytest
import torch

from kagglecifar.data.device_loader import DeviceLoader, choose_loader
from kagglecifar.data.loading import EpochBatches, TrainLoader

N = 64


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    images[:, :, :, 0] = np.arange(N).reshape(-1, 1, 1)  # the red channel says which image this is
    return images, np.arange(N) % 10


def loader(data, augment="standard", **options):
    made, line = choose_loader(*data, augment=augment, batch_size=16, seed=3, **options)
    return made, line


def batches(made, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y in made.epoch(epoch, start)]


def test_batched_when_the_pipeline_compiles_else_workers_with_the_reason(data):
    made, line = loader(data)
    assert isinstance(made, DeviceLoader) and line.startswith("augmentation: batched on cpu")
    made, line = loader(data, augment="strong")
    assert isinstance(made, TrainLoader)
    assert line.endswith("not batched on the device: Affine has no batched equivalent")
    made, line = loader(data, batched=False)
    assert isinstance(made, TrainLoader) and "switched off" in line


def test_order_is_epoch_batches_and_labels_follow_images(data):
    made, _ = loader(data, augment="none")
    assert len(made) == N // 16
    expected = EpochBatches(N, 16, 3)
    expected.set_epoch(2)
    for (x, y), (_, _, rows) in zip(made.epoch(2), expected):
        assert x.dtype == torch.uint8 and x.shape == (16, 32, 32, 3)
        assert torch.equal(y, torch.as_tensor(data[1][rows]))
        assert torch.equal(x, torch.from_numpy(data[0][rows]))


def test_an_epoch_is_a_function_of_seed_and_epoch_and_resumes_at_any_step(data):
    made, _ = loader(data)
    first = batches(made, 1)
    again = batches(loader(data)[0], 1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    resumed = batches(made, 1, start=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], resumed))
    assert not torch.equal(first[0][0], batches(made, 2)[0][0])


def test_alternating_flips_mirror_every_image_on_odd_epochs(data):
    made, line = loader(data, augment="none", alternate_flip=True)
    assert made.base_flips is None  # no HorizontalFlip to replace
    import albumentations as A

    from kagglecifar.data import device_loader
    from kagglecifar.data.batch_augment import compile_pipeline

    engine = compile_pipeline(A.Compose([A.HorizontalFlip(p=0.5)]))
    made = device_loader.DeviceLoader(*data, engine=engine, batch_size=16, seed=3, alternate_flip=True)

    def flipped_by_id(epoch):
        out = {}
        for x, _ in made.epoch(epoch):
            for image in x:
                ident = int(image[0, 0, 0])
                out[ident] = not torch.equal(image, torch.from_numpy(data[0][ident]))
        return out

    even, odd, even2 = flipped_by_id(0), flipped_by_id(1), flipped_by_id(2)
    assert even == even2 and all(odd[i] != even[i] for i in even)
    assert 0.2 < np.mean(list(even.values())) < 0.8


def test_ranks_share_the_epoch_without_overlap(data):
    rows = []
    for rank in range(2):
        made, _ = loader(data, augment="none", rank=rank, world_size=2)
        rows += [int(i) for x, _ in made.epoch(0) for i in x[:, 0, 0, 0]]
    assert sorted(rows) == list(range(N))
