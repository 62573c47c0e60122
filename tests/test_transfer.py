"""Transfer learning from timm backbones: weights from a file or the hub cache (offline), the classifier
replaced, freezing and unfreezing, learning-rate groups, heads, a fine-tuned run that predicts and evaluates."""

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from kagglecifar import cache, models
from kagglecifar.checkpoint import build_model, load_checkpoint
from kagglecifar.errors import KaggleCifarError
from kagglecifar.recipes import make_config
from kagglecifar.training.optim import make_optimizer, set_learning_rate

CLASSES = [f"class{i}" for i in range(10)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pretrained_file(folder, arch="test_resnet", num_classes=1000, kind="pth", seed=1):
    """A timm model's weights saved the way users bring them: a state dict, safetensors or a checkpoint dict."""
    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()
    path = folder / f"{arch}-{kind}.{'safetensors' if kind == 'safetensors' else 'pth'}"
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif kind == "checkpoint":  # timm's train.py checkpoints, saved from a DDP wrapper
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("kind", ["pth", "safetensors", "checkpoint"])
def test_file_weights_load_exactly_and_the_classifier_is_replaced(tmp_path, kind):
    path, state = pretrained_file(tmp_path, kind=kind)
    model = models.create_model("timm/test_resnet", num_classes=10, pretrained=str(path))
    own = model.backbone.state_dict()
    loaded = [k for k in state if not k.startswith("fc.")]
    assert loaded and all(torch.equal(own[k], state[k]) for k in loaded)
    assert own["fc.weight"].shape == (10, model.backbone.num_features)  # new, for the dataset's classes
    assert model.loaded_weights == (
        f"timm/test_resnet: loaded {len(loaded)} of {len(own)} tensors from {path}; 2 new: fc.weight, fc.bias "
        "(the classifier, for this dataset's classes)"
    )


def test_a_classifier_that_fits_is_loaded_too(tmp_path):
    path, state = pretrained_file(tmp_path, num_classes=10)
    model = models.create_model("timm/test_resnet", num_classes=10, pretrained=str(path))
    assert torch.equal(model.backbone.fc.weight, state["fc.weight"])
    assert model.loaded_weights == f"timm/test_resnet: loaded {len(state)} of {len(state)} tensors from {path}"


def test_vit_weights_load_at_another_image_size_with_the_position_embedding_resampled(tmp_path):
    path, state = pretrained_file(tmp_path, arch="test_vit")
    model = models.create_model("timm/test_vit", num_classes=10, pretrained=str(path), image_size=32)
    assert model.image_size == 32 and model.backbone.pos_embed.shape[1] == 1 + 2 * 2  # 32 px / 16 px patches
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert torch.equal(model.backbone.cls_token, state["cls_token"])
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_the_hub_weights_come_from_the_cache_offline(tmp_path, monkeypatch):
    """A pre-downloaded Hugging Face cache (as `hf download` leaves it) is used with the hub switched off."""
    from huggingface_hub import constants

    state = pretrained_file(tmp_path)[1]
    snapshot = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = models.create_model("timm/test_resnet", num_classes=10)  # pretrained="hub" is the default
    assert torch.equal(model.backbone.conv1[0].weight, state["conv1.0.weight"])
    assert "from the Hugging Face hub's timm/test_resnet.r160_in1k (" in model.loaded_weights


def test_the_backbone_s_own_size_and_normalisation(tmp_path):
    model = models.create_model("timm/test_vit", num_classes=10, pretrained="none")
    assert model.image_size == 160  # timm's pretrained_cfg input size
    assert model.normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    seen = []
    for size in (32, 64):
        resnet = models.create_model("timm/resnet10t", num_classes=10, pretrained="none", image_size=size).eval()
        resnet.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
        resnet(torch.rand(1, 3, 32, 32))  # upsampled on the device to image_size
    assert seen == [(1, 3, 32, 32), (1, 3, 64, 64)]
    assert resnet.normalize.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])


def step(model, optimizer, epoch):
    """One of the trainer's steps: train mode, the frozen groups at rate 0, one optimizer step."""
    model.train()
    set_learning_rate(optimizer, 1e-2, model.frozen_groups(epoch))
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.arange(4)).backward()
    optimizer.step()


def test_freezing_by_stage_and_unfreezing_later(tmp_path):
    model = models.create_model(
        "timm/test_resnet", num_classes=10, pretrained="none", freeze_stages=2, unfreeze_epoch=1
    )
    frozen = set(model.frozen_names)
    assert frozen and all(n.split(".")[0] in ("conv1", "bn1", "layer1", "layer2") for n in frozen)
    assert any(n.startswith("layer2.") for n in frozen) and not any(n.startswith("layer3.") for n in frozen)
    assert all(p.requires_grad for p in model.parameters())  # compiled graphs and DDP stay as they are
    recipe = make_config("timm/test_resnet", "cpu", optimizer="adamw", device="cpu").recipe
    optimizer = make_optimizer(model, recipe)
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    stats = model.backbone.bn1.running_mean.clone()
    step(model, optimizer, epoch=0)
    assert not model.backbone.bn1.training and model.backbone.layer3[0].bn1.training  # frozen BN keeps its stats
    after = dict(model.backbone.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
    assert torch.equal(stats, model.backbone.bn1.running_mean)
    step(model, optimizer, epoch=1)  # after unfreeze_epoch epochs: everything trains, with the same optimizer
    assert model.backbone.bn1.training
    assert not torch.equal(before["conv1.0.weight"], model.backbone.conv1[0].weight)
    assert not torch.equal(stats, model.backbone.bn1.running_mean)


def test_vit_stages_are_its_blocks():
    model = models.create_model("timm/test_vit", num_classes=10, pretrained="none", freeze_stages=1)
    frozen = set(model.frozen_names)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} <= frozen
    assert not any(n.startswith("blocks.1.") or n.startswith("head") for n in frozen)
    with pytest.raises(KaggleCifarError, match=r"freeze_stages must be 0\.\.6 \(its stages\), got 7"):
        models.create_model("timm/test_vit", num_classes=10, pretrained="none", freeze_stages=7)


def test_learning_rate_groups_scale_the_backbone_and_decay_by_layer():
    model = models.create_model("timm/test_vit", num_classes=10, pretrained="none", freeze_stages=3)
    recipe = make_config(
        "timm/test_vit", "cpu", optimizer="adamw", lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1, layer_decay=0.5
    ).recipe
    optimizer = make_optimizer(model, recipe)
    set_learning_rate(optimizer, 1e-3)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.backbone.named_parameters())
    assert len(lr) == len(params) == sum(len(g["params"]) for g in optimizer.param_groups)  # frozen ones too
    assert lr[id(params["head.weight"])] == pytest.approx(1e-3)  # the classifier at the full rate
    last = 1e-3 * 0.1  # the backbone's scale, then one factor 0.5 per layer down from the head
    assert lr[id(params["norm.weight"])] == lr[id(params["blocks.5.mlp.fc1.weight"])] == pytest.approx(last * 0.5)
    assert lr[id(params["blocks.0.mlp.fc1.weight"])] == pytest.approx(last * 0.5**6)
    assert lr[id(params["pos_embed"])] == pytest.approx(last * 0.5**7)
    assert decay[id(params["blocks.0.mlp.fc1.weight"])] == 0.05
    assert decay[id(params["blocks.0.mlp.fc1.bias"])] == decay[id(params["pos_embed"])] == 0.0


def test_learning_rate_scales_need_a_pretrained_backbone(tmp_path, run_cli):
    recipe = make_config("mlp", "cpu", layer_decay=0.8).recipe
    with pytest.raises(KaggleCifarError, match=r"--layer-decay: model 'mlp' has no pretrained backbone to scale"):
        make_optimizer(models.create_model("mlp"), recipe)


def test_the_mlp_head_of_the_reports():
    model = models.create_model("timm/test_resnet", num_classes=10, pretrained="none", head="mlp")
    dropout, hidden, norm, _, classifier = model.head
    assert dropout.p == 0.25 and (hidden.in_features, hidden.out_features) == (model.backbone.num_features, 256)
    assert isinstance(norm, torch.nn.BatchNorm1d) and classifier.out_features == 10
    assert model.backbone.num_classes == 0  # timm's own classifier removed: the backbone gives pooled features
    assert model.eval()(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    model = models.create_model("timm/test_resnet", num_classes=10, pretrained="none", head="mlp", head_dropout=0.5)
    assert model.head[0].p == 0.5
    groups = model.transfer_param_groups(0.05, 0.1, 1.0)
    assert {id(p) for g in groups if g["lr_scale"] == 1.0 for p in g["params"]} == {
        id(p) for p in model.head.parameters()
    }
    with pytest.raises(KaggleCifarError, match="head_dropout applies to the mlp head"):
        models.create_model("timm/test_resnet", pretrained="none", head_dropout=0.5)


def test_one_line_errors(tmp_path, run_cli, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    vit_weights, _ = pretrained_file(tmp_path, arch="test_vit")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    data = make_data(tmp_path / "data")
    cases = [
        (
            ["timm/test_resnet", "--pretrained", "hub"],
            "model 'timm/test_resnet': pretrained weights timm/test_resnet.r160_in1k are not in the Hugging Face "
            f"cache ({tmp_path / 'empty-cache'}) and cannot be downloaded (HF_HUB_OFFLINE is set); pass "
            "--pretrained PATH",
        ),
        (["timm/resnet10"], "unknown model 'timm/resnet10': timm has no model 'resnet10'; did you mean timm/resnet10t"),
        (["timm/resnet10t.foo"], "timm has no pretrained tag 'foo' for resnet10t; its tags: c3_in1k"),
        (
            ["timm/test_resnet", "--pretrained", vit_weights],
            f"--pretrained {vit_weights}: does not fit model 'timm/test_resnet' (",
        ),
        (["timm/test_resnet", "--pretrained", tmp_path / "junk.pth"], f"{tmp_path / 'junk.pth'}: not a readable"),
        (["timm/test_resnet", "--pretrained", tmp_path / "absent.pt"], "absent.pt: no such weights file"),
        (["timm/test_resnet", "--head", "deep"], "--head deep: choose linear or mlp"),
        (["timm/test_resnet", "--pretrained", "none", "--width", "0.5"], "width must be 1"),
        (["mlp", "--pretrained", "none"], "--pretrained none: model mlp has no pretrained option"),
    ]
    for args, message in cases:
        code, _, err = run_cli("train", *args, "--device", "cpu", "--data-dir", data, "--runs-dir", tmp_path / "runs")
        lines = err.strip().splitlines()  # the config lines (where each value came from), then the error
        errors = [line for line in lines if line.startswith("kagglecifar: error: ")]
        assert code == 1 and errors == lines[-1:] and "Traceback" not in err, (args, err)
        assert message in errors[0], (args, errors[0])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing left behind


def make_data(folder):
    """A train cache whose classes differ by colour, a test cache and sampleSubmission.csv."""
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 10
    colours = rng.integers(0, 256, (10, 3))
    pixels = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (120, 32, 32, 3)), 0, 255).astype(np.uint8)
    cache.write_split(folder, "train", pixels, np.arange(1, 121), CLASSES, labels=labels)
    cache.write_split(folder, "test", pixels[:12], np.arange(1, 13), CLASSES)
    (folder / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in range(1, 13)))
    return folder


def test_a_fine_tuned_run_predicts_and_evaluates_with_no_weights_file_and_no_hub(tmp_path, run_cli, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    data = make_data(tmp_path / "data")
    weights, state = pretrained_file(tmp_path)
    args = ["--pretrained", weights, "--image-size", "32", "--freeze-stages", "1", "--unfreeze-epoch", "1"]
    args += ["--head", "mlp", "--optimizer", "adamw", "--lr", "1e-3", "--backbone-lr-scale", "0.1", "--accumulate", "2"]
    code, _, err = run_cli(
        "train", "timm/test_resnet", *args, "--epochs", "2", "--batch-size", "20", "--val-fraction", "0.2",
        "--device", "cpu", "--workers", "0", "--data-dir", data, "--runs-dir", tmp_path / "runs", "--preset", "cpu",
    )  # fmt: skip
    assert code == 0, err
    loaded = len(state) - 2  # all but the classifier: the mlp head is new
    first = f"timm/test_resnet: loaded {loaded} of {loaded} tensors from {weights}; the file's classifier (fc.weight, "
    lines = err.strip().splitlines()  # where each value came from, then what the model loaded
    assert next(line for line in lines if line.startswith("timm/")) == (
        first + "fc.bias) not used; new mlp head (256 hidden units)"
    ), err
    assert lines.index(first + "fc.bias) not used; new mlp head (256 hidden units)") < 4  # among the first lines
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("timm-test_resnet-")
    payload = load_checkpoint(run / "best.pt")
    assert payload["model"] == "timm/test_resnet" and payload["model_kwargs"]["pretrained"] == str(weights)
    weights.unlink()  # rebuilding the run needs neither the file nor the hub
    model = build_model(payload)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in payload["state_dict"].items())
    code, _, err = run_cli("predict", run, "--data-dir", data, "--out", tmp_path / "sub.csv", "--device", "cpu")
    assert code == 0, err
    assert pd.read_csv(tmp_path / "sub.csv")["id"].tolist() == list(range(1, 13))
    code, out, err = run_cli("evaluate", run, "--data-dir", data, "--device", "cpu")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("evaluate: 20 validation images, accuracy none ")
    from kagglecifar.reports.compare import compare

    (summary,) = compare([run], tmp_path / "submissions")  # counts the parameters with no weights file or hub
    assert summary.params == sum(p.numel() for p in model.parameters())
    code, _, err = run_cli("train", "--resume", run, "--data-dir", data, "--device", "cpu", "--workers", "0")
    assert code == 1 and "already trained all 2 epochs; nothing to resume" in err, err
    stopped = torch.load(run / "last.pt", weights_only=True)  # as if stopped after its first epoch
    stopped["train_state"]["progress"]["epoch"] = 1
    torch.save(stopped, run / "last.pt")
    code, _, err = run_cli("train", "--resume", run, "--data-dir", data, "--device", "cpu", "--workers", "0")
    assert code == 0 and "loaded" not in err, err  # resuming takes the weights from last.pt


def test_accumulated_micro_batches_step_like_the_whole_batch(tmp_path):
    """Without BatchNorm the gradient of N micro-batches is the whole batch's: the same weights result."""
    data = make_data(tmp_path / "data")
    finals = []
    for accumulate in (1, 3):
        config = make_config(
            "mlp", "cpu", epochs=1, batch_size=30, accumulate=accumulate, lr=0.05, optimizer="sgd", val_fraction=0.0,
            lookahead=False, augment="none", device="cpu", workers=0, data_dir=data,
            runs_dir=tmp_path / f"runs{accumulate}",
        )  # fmt: skip
        from kagglecifar.training.train import train

        result = train(config)
        finals.append(load_checkpoint(result.run_dir / "best.pt")["state_dict"])
    assert all(torch.allclose(finals[0][k], finals[1][k], atol=1e-6) for k in finals[0])
    assert any(not torch.equal(finals[0][k], v) for k, v in build_model_state("mlp").items())


def build_model_state(name):
    torch.manual_seed(0)
    return models.create_model(name).state_dict()


def test_models_lists_recommended_timm_backbones_and_says_any_name_works(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("timm/vit_base_patch16_224.augreg_in21k_ft_in1k"))
    assert "85.81M" in row and "224 px" in row and "35.13" in row  # params, input size, GFLOPs at 224 px
    assert "Any other timm model works too: `kagglecifar train timm/NAME`" in " ".join(out.split())


def test_the_timm_family_s_search_space_and_the_transfer_preset():
    from kagglecifar.tune import space

    assert space.default_space_path("timm/resnet10t").name == "timm_family.yaml"
    config = make_config(preset="transfer", device="cpu")
    assert config.recipe.model == "timm/vit_base_patch16_224.augreg_in21k_ft_in1k" and config.recipe.layer_decay
