import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# fp32 on every CPU model, so that a test behaves alike on a CPU with bf16 arithmetic and one without
# (test_device.py sets it both ways where the plan itself is tested).
os.environ.setdefault("KAGGLECIFAR_CPU_BF16", "0")

import pytest  # noqa: E402

from kagglecifar import cli  # noqa: E402


@pytest.fixture
def run_cli(capsys):
    """Run `kagglecifar ARGS...` in-process; return (exit code, stdout, stderr)."""

    def invoke(*args):
        code = 0
        try:
            cli.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two threads on a busy two-core machine are ten times slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
