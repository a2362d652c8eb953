import os
import signal
from pathlib import Path


def _arithmetic_of_the_recordings() -> None:
    """The recorded trajectories (tests/golden/) were computed on CPUs with AVX2 and no AVX-512.
    On a CPU with AVX-512, torch, oneDNN, numpy and OpenBLAS pick wider kernels whose rounding
    differs after the first steps; these variables (read when each library loads, hence before
    any import of them) make them take the AVX2 kernels, so that the recordings are checked
    exactly there too. ``MT_REPRO_TEST_NATIVE_ISA=1`` keeps the machine's own kernels."""
    if os.environ.get("MT_REPRO_TEST_NATIVE_ISA") == "1":
        return
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return
    if "avx512f" not in flags or "avx2" not in flags:
        return
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
    os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", "X86_V4 AVX512_ICL AVX512_SPR")


_arithmetic_of_the_recordings()

import pytest  # noqa: E402 - after the arithmetic is chosen
import torch  # noqa: E402

from mt_repro.data.synthetic import write_image_tree, write_label_file

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background by a non-interactive shell (``nohup pytest &``) inherits
# SIGINT ignored, and so would every command it starts: the tests that press Ctrl-C, interrupt
# a download or cancel a job would then see their signal ignored. Handled here, it reverts to
# the default in each command started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # One thread per worker: the workers already use every core, and more threads than cores
    # slow small networks down several times (tests that need a thread count set their own).
    torch.set_num_threads(1)
# The original label files live outside the repository (they are the original's data files).
ORIGINAL_LABELS = Path(os.environ.get("MT_REPRO_ORIGINAL_LABELS", REPO.parent / "shared" / "original_labels"))


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """One GCN+ZCA cache for the session, shared by the workers (its files are keyed by their
    contents and written atomically): the whitening of a small CIFAR-10 stand-in is computed
    once, not once per test module and worker."""
    if "MT_REPRO_CACHE_DIR" not in os.environ:
        os.environ["MT_REPRO_CACHE_DIR"] = str(tmp_path_factory.getbasetemp().parent / "mt-repro-cache")


@pytest.fixture(autouse=True)
def same_thread_count():
    """A command run in the test's process sets torch's thread count for its network
    (``mt_repro.engine.threads``); the next test starts from the worker's own again."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def original_labels() -> Path:
    if not ORIGINAL_LABELS.is_dir():
        pytest.skip(f"original label files not found at {ORIGINAL_LABELS} (set MT_REPRO_ORIGINAL_LABELS)")
    return ORIGINAL_LABELS


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """By-image CIFAR-10 tree: 6 training and 2 test images per class, and a 2-per-class label file."""
    root = tmp_path_factory.mktemp("tiny") / "by-image"
    write_image_tree(root, train_per_class=6, test_per_class=2, seed=0)
    write_label_file(root.parent / "labels.txt", root, per_class=2)
    return root


@pytest.fixture
def cli(capsys):
    """Run ``mt-repro ARGS...`` in this process; returns (exit code, stdout, stderr)."""
    from mt_repro.cli import main

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(result, *fragments, code=2):
    """``result`` of the ``cli`` fixture: exit ``code``, one ``mt-repro: error:`` line naming
    every fragment, no traceback."""
    exit_code, _, err = result
    assert exit_code == code, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mt-repro: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


FUZZ_SCALE_ENV = "MT_REPRO_FUZZ_SCALE"


def fuzz_examples(n: int) -> int:
    """``n`` property-test cases in CI; ``$MT_REPRO_FUZZ_SCALE`` times as many for the long
    fuzzing run (benchmarks/fuzz/run_fuzz.sh)."""
    return n * int(os.environ.get(FUZZ_SCALE_ENV, "1"))


def pytest_collection_modifyitems(config, items):
    # The check against the original code's own trajectory replays two whole runs of shake-shake
    # 26: the slow tier (marked here, so that its file stays as it was checked in).
    for item in items:
        if item.path.name == "test_faithfulness.py":
            item.add_marker(pytest.mark.slow)
    # Longest first: the workers take modules in this order, so a long module that came last would
    # run alone at the end. The last run's module times (pytest's cache) order them where known;
    # otherwise modules with slow tests go first.
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    durations = cache.get(MODULE_DURATIONS_KEY, {}) if cache else {}
    has_slow = {item.path for item in items if item.get_closest_marker("slow")}

    def expected_cost(item):
        return (-durations.get(item.path.name, 0.0), item.path not in has_slow)

    items.sort(key=expected_cost)


MODULE_DURATIONS_KEY = "mt-repro/module-durations"


def pytest_runtest_logreport(report):
    # Sums each module's test times (setup, call and teardown) for the ordering above.
    _module_seconds[Path(report.fspath).name] = _module_seconds.get(Path(report.fspath).name, 0.0) + report.duration


_module_seconds: dict[str, float] = {}


def pytest_sessionfinish(session):
    # Only the controller (or a run without workers) sees every module's reports.
    cache = getattr(session.config, "cache", None)
    if cache and not hasattr(session.config, "workerinput") and _module_seconds:
        cache.set(MODULE_DURATIONS_KEY, {**cache.get(MODULE_DURATIONS_KEY, {}), **_module_seconds})


def digits_demo_config(tmp_path: Path, method: str, mode: str):
    """The digits demo's run of ``method`` (or a variant, ``NAME[options]``) for data seed 0,
    100 labels, 2 epochs, in ``mode``."""
    from mt_repro.apps import digits_demo   # (only the tests that build a demo run need it)
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file as write_labels

    label_file = tmp_path / "labels.txt"
    write_labels(label_file, digits.label_file_entries(100, 0))
    return digits_demo.demo_configs(load_demo_config(), method, 100, label_file, 0, 2, tmp_path / mode, mode=mode)


def interrupted_run(config, out, at_step: int, monkeypatch) -> None:
    """``config`` trained into ``out`` until its step ``at_step`` starts: then a Ctrl-C."""
    from mt_repro.engine import runs
    from mt_repro.engine.trainer import Trainer

    real_step = Trainer.train_step

    def interrupted(self, batch, hp, epoch):
        if self.state.global_step == at_step:
            raise KeyboardInterrupt
        return real_step(self, batch, hp, epoch)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.train(config, out, progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)


def straight_and_resumed(config, tmp_path: Path, monkeypatch, *, stop_at_step: int = 30):
    """Train ``config`` straight into ``tmp_path/straight``, and again into ``tmp_path/resumed``
    with a Ctrl-C at step ``stop_at_step`` and a resume; (the straight run's summary, the resumed
    one's, the two last checkpoints)."""
    from mt_repro.engine import checkpoint as ckpt
    from mt_repro.engine import runs

    straight = runs.train(config, tmp_path / "straight", progress=False)
    interrupted_run(config, tmp_path / "resumed", stop_at_step, monkeypatch)
    resumed = runs.resume(tmp_path / "resumed", progress=False)
    checkpoints = tuple(ckpt.load_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")
                        for run in ("straight", "resumed"))
    return straight, resumed, checkpoints
