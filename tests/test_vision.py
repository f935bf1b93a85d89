"""Vision mode on tiny generated data: attacks, methods, the learned attacker, resume, errors."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import pytest
import torch
import torch.nn.functional as F
from tiny_problems import clean_small_cnn

from l2l_gail.core.attacker import LearnedAttacker
from l2l_gail.errors import L2LError
from l2l_gail.robust import data as D
from l2l_gail.robust.attacks import FGSM, PGD, LearnedAttack, build_attack
from l2l_gail.robust.evaluate import evaluate
from l2l_gail.robust.models import build_model
from l2l_gail.runs import RunDir
from l2l_gail.vision.methods import METHODS, build_method
from l2l_gail.vision.train import EvalConfig, VisionConfig, evaluate_checkpoint, train

EPS = 8 / 255
STRONG_EPS = 16 / 255  # at 8/255 neither FGSM nor PGD breaks any example of most seeds' classifier


@pytest.fixture(scope="module")
def tiny() -> D.ImageData:
    return D.synthetic((3, 16, 16), num_classes=4, train_size=256, test_size=128, seed=1)


@pytest.fixture(scope="module")
def trained(tiny):
    """A small CNN trained briefly on clean data (the fixed classifier the attacks face)."""
    return clean_small_cnn(tiny.train_x, tiny.train_y, channels=3, classes=4, width=8, image_size=16)


def test_synthetic_is_learnable(tiny, trained):
    acc = evaluate(trained, tiny.test_x, tiny.test_y, [])["clean_acc"]
    assert acc > 0.8  # 1.000 over fixture seeds 0-9 x ATEN_CPU_CAPABILITY default/avx2/avx512, one thread


@pytest.mark.parametrize("attack", [FGSM(EPS), PGD(EPS, 10), PGD(EPS, 10, loss="cw"), PGD(EPS, 5, restarts=2),
                                    LearnedAttack(LearnedAttacker(3, EPS, width=0.1))])
def test_attacks_raise_loss_and_stay_in_ball(tiny, trained, attack):
    x, y = D.to_float(tiny.test_x[:64]), tiny.test_y[:64]
    torch.manual_seed(0)
    x_adv = attack(trained, x, y)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean, adv = F.cross_entropy(trained(x), y), F.cross_entropy(trained(x_adv), y)
    if isinstance(attack, LearnedAttack):  # untrained: a perturbation, not necessarily harmful
        assert (x_adv - x).abs().max() > 0
    else:
        assert adv > clean  # adv / clean over fixture seeds 0-9 x the 3 ISA settings: 1.72-313


def test_pgd_beats_fgsm_and_worst_case_is_min(tiny, trained):
    torch.manual_seed(0)
    out = evaluate(trained, tiny.test_x, tiny.test_y, [FGSM(STRONG_EPS), PGD(STRONG_EPS, 20, 0.01)])
    # over fixture seeds 0-9 x the 3 ISA settings: clean - fgsm 0.17-0.64, fgsm - pgd20 0.008-0.17
    assert out["pgd20_acc"] <= out["fgsm_acc"] < out["clean_acc"]
    assert out["worst_case_acc"] <= min(out["pgd20_acc"], out["fgsm_acc"])


def test_autoattack_runs_and_agrees_with_pgd(tiny, trained):
    torch.manual_seed(0)
    out = evaluate(trained, tiny.test_x[:32], tiny.test_y[:32], [PGD(EPS, 20, 0.01), build_attack(
        "autoattack", EPS, autoattack_version="fast")])
    assert out["autoattack_acc"] <= out["pgd20_acc"] + 0.1  # measured: autoattack - pgd20 <= 0.0


def test_learned_attacker_loss_rises_against_fixed_classifier(tiny, trained):
    torch.manual_seed(0)
    trained.zero_grad(set_to_none=True)
    attacker = LearnedAttacker(3, STRONG_EPS, variant="grad", width=0.125, lr=1e-3)
    x, y = D.to_float(tiny.train_x[:128]), tiny.train_y[:128]
    losses = [attacker.attack_step(trained, x, y) for _ in range(30)]
    # last / first over fixture seeds 0-9 x the 3 ISA settings: 2.2-2300 (at 8/255: 1.48-65)
    assert sum(losses[-5:]) / 5 > 1.5 * sum(losses[:5]) / 5
    assert all(p.grad is None for p in trained.parameters())  # phi only


def test_kstep_attacker_stays_in_ball(tiny, trained):
    attacker = LearnedAttacker(3, EPS, variant="grad", steps=3, width=0.1)
    x, y = D.to_float(tiny.test_x[:16]), tiny.test_y[:16]
    x_adv = attacker(trained, x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def _config(method: str, **kw) -> VisionConfig:
    base = dict(dataset="synthetic", synthetic_shape="3x16x16", model="preact-resnet18", width=4,
                method=method, epochs=4, batch_size=32, lr=0.1, eval_subset=128, attacker_width=0.08,
                pgd_steps=3, train_subset=384)
    base.update(kw)
    return VisionConfig(**base)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_above_chance(tmp_path, method):
    run = RunDir(tmp_path / method, {"m": method})
    metrics = train(_config(method), run, progress=False)
    # 10 classes: chance is 0.1; measured 0.94-1.0 over seeds 0-9 x the 3 ISA settings, every method
    assert metrics["final_test_clean_acc"] > 0.5
    assert (run.path / "model.pt").is_file() and len(run.checkpoints()) >= 1
    assert any(run.tb_dir.rglob("events.out.tfevents.*"))


def test_resume_gives_same_weights_as_uninterrupted(tmp_path, monkeypatch):
    import l2l_gail.vision.train as T

    full = RunDir(tmp_path / "full", {})
    train(_config("l2l-grad", epochs=3), full, progress=False)

    real_epoch = T._train_epoch

    def interrupted(config, data, model, opt, method, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(config, data, model, opt, method, epoch, *args)

    part = RunDir(tmp_path / "part", {})
    monkeypatch.setattr(T, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_config("l2l-grad", epochs=3), part, progress=False)
    monkeypatch.setattr(T, "_train_epoch", real_epoch)
    assert not (part.path / "model.pt").exists() and len(part.checkpoints()) == 2
    train(_config("l2l-grad", epochs=3), part, resume=True, progress=False)
    a = torch.load(full.path / "model.pt", weights_only=False)
    b = torch.load(part.path / "model.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["method"]["attacker"]:
        assert torch.equal(a["method"]["attacker"][k], b["method"]["attacker"][k]), k


def test_nan_loss_is_reported_and_checkpoint_kept(tmp_path):
    run = RunDir(tmp_path / "nan", {})
    with pytest.raises(L2LError, match=r"became nan.*lower --lr"):
        train(_config("standard", lr=1e12, epochs=2), run, progress=False)
    assert not (run.path / "model.pt").exists()


def test_unknown_method_attack_and_bad_eps():
    with pytest.raises(L2LError, match="unknown method"):
        build_method("pgdd", eps=0.1, channels=1)
    with pytest.raises(L2LError, match="unknown attack"):
        build_attack("deepfool", 0.1)
    with pytest.raises(L2LError, match=r"eps must lie in \[0, 1\]"):
        _config("pgd", eps=1.5).validate()


def test_python_callers_get_the_cli_errors(tmp_path):
    """The range checks live in the configurations, not in argparse: the Python API refuses the same."""
    with pytest.raises(L2LError, match="--width must be >= 1, got 0"):
        _config("standard", width=0).validate()
    with pytest.raises(L2LError, match="--eval-subset must be >= 1, got 0"):
        train(_config("standard", eval_subset=0), RunDir(tmp_path / "r", {}), progress=False)
    with pytest.raises(L2LError, match="--width must be >= 1, got 0"):
        build_model("small-cnn", 3, 10, width=0)
    with pytest.raises(L2LError, match="--test-subset must be >= 1, got 0"):
        evaluate_checkpoint(tmp_path / "none", EvalConfig(test_subset=0))
    with pytest.raises(L2LError, match="--batch-size must be >= 1, got 0"):
        evaluate(build_model("small-cnn", 3, 4, width=4, image_size=16), torch.zeros(2, 3, 16, 16),
                 torch.zeros(2), [], batch_size=0)


def test_default_eps_per_data_set():
    assert {d: VisionConfig(dataset=d).resolved_eps() for d in D.DATASETS} == {
        "fashion-mnist": 0.1, "mnist": 0.3, "mnist-5k": 0.3, "cifar10": 8 / 255, "cifar100": 8 / 255,
        "synthetic": 8 / 255}
    assert VisionConfig(dataset="mnist-5k", eps=0.1).resolved_eps() == 0.1
    assert D.describe_eps(8 / 255) == "0.0313725 = 8/255" and D.describe_eps(0.3) == "0.3"


def _write_idx(path, arr, gz=True):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + arr.astype("uint8").tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def test_missing_dir_and_wrong_digest(tmp_path):
    with pytest.raises(L2LError, match="does not exist"):
        D.load_idx_dataset("mnist", tmp_path / "nope")
    for stem in D.IDX_FILES:
        shape = (10, 28, 28) if "images" in stem else (10,)
        _write_idx(tmp_path / f"{stem}.gz", torch.zeros(shape, dtype=torch.uint8).numpy())
    with pytest.raises(L2LError, match="does not match the published digest"):
        D.load_idx_dataset("mnist", tmp_path)


def test_idx_parser_reads_and_detects_truncation(tmp_path):
    arr = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4).numpy()
    _write_idx(tmp_path / "a", arr, gz=False)
    assert (D._parse_idx((tmp_path / "a").read_bytes(), tmp_path / "a") == arr).all()
    with pytest.raises(L2LError, match="truncated"):
        D._parse_idx((tmp_path / "a").read_bytes()[:-3], tmp_path / "a")


def _cifar_tarball(path, batches, monkeypatch=None) -> None:
    """Write CIFAR-10's python tarball at ``path`` with ``batches`` (member name -> pickled bytes);
    with ``monkeypatch``, make its MD5 the published one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (path / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    if monkeypatch is not None:
        entry = list(D.CIFAR["cifar10"])
        entry[1] = D._md5(buf.getvalue())
        monkeypatch.setitem(D.CIFAR, "cifar10", tuple(entry))


def _cifar_batch(n: int, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps({b"data": torch.randint(0, 255, (n, 3072)).numpy().astype("uint8"),
                         b"labels": list(range(n))}, protocol=protocol)


class _Planted:
    def __reduce__(self):
        return (print, ("planted code ran",))


def test_cifar_tarball_parsed_and_digest_checked(tmp_path, monkeypatch):
    # protocol 2 as CIFAR's own (Python 2) files, 5 as numpy 2 writes out-of-band buffers
    batches = {"data_batch_1": _cifar_batch(6, protocol=2), "test": _cifar_batch(4, protocol=5)}
    _cifar_tarball(tmp_path, batches)
    with pytest.raises(L2LError, match="published MD5"):
        D.load_cifar("cifar10", tmp_path)
    _cifar_tarball(tmp_path, batches, monkeypatch)
    data = D.load_cifar("cifar10", tmp_path)
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32) and data.augment
    aug = D.augment_batch(D.to_float(data.train_x), torch.Generator().manual_seed(0))
    assert aug.shape == (6, 3, 32, 32) and aug.min() >= 0 and aug.max() <= 1


def test_cifar_batch_that_names_code_is_refused_even_with_the_published_md5(tmp_path, monkeypatch, capsys):
    planted = pickle.dumps({b"data": _Planted(), b"labels": [0]})
    _cifar_tarball(tmp_path, {"data_batch_1": _cifar_batch(2), "test": planted}, monkeypatch)
    with pytest.raises(L2LError, match=r"builtins\.print, which no CIFAR file holds"):
        D.load_cifar("cifar10", tmp_path)
    assert "planted code ran" not in capsys.readouterr().out


def test_fashion_mnist_from_debian_package_if_installed():
    if not D.DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    data = D.load_dataset("fashion-mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_y.shape == (10000,)
    assert data.subset(100).train_x.shape[0] == 100
    with pytest.raises(L2LError, match="out of range"):
        data.subset(70000)
