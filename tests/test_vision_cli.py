"""The `l2l vision` entry points, run end to end with a tiny budget."""

from __future__ import annotations

import json

import torch

from l2l_gail.cli import main


def test_train_then_eval_end_to_end(tmp_path, capsys):
    args = ["vision", "train", "--dataset", "synthetic", "--synthetic-shape", "3x16x16",
            "--model", "small-cnn", "--width", "8",
            "--method", "l2l-grad", "--epochs", "1", "--train-subset", "128", "--eval-subset", "64",
            "--attacker-width", "0.08", "--runs-dir", str(tmp_path), "--name", "smoke", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "vision" / "smoke"
    assert (run / "model.pt").is_file() and (run / "metrics.json").is_file()
    assert main(args) == 2  # collision refused
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "eval.json"
    assert main(["vision", "eval", str(run), "--attacks", "fgsm,pgd5", "--test-subset", "64",
                 "--output", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["worst_case_acc"] <= result["pgd5_acc"] <= result["clean_acc"] <= 1
    assert main(["vision", "eval", str(run), "--attacks", "fgsm", "--output", str(out)]) == 2


def test_eval_rejects_checkpoint_of_another_model(tmp_path, capsys):
    main(["vision", "train", "--dataset", "synthetic", "--synthetic-shape", "3x16x16",
            "--model", "small-cnn", "--width", "8",
          "--method", "standard", "--epochs", "1", "--train-subset", "64", "--eval-subset", "32",
          "--runs-dir", str(tmp_path), "--name", "a", "--no-progress"])
    blob = torch.load(tmp_path / "vision" / "a" / "model.pt", weights_only=False)
    blob["config"]["width"] = 16
    torch.save(blob, tmp_path / "wrong.pt")
    assert main(["vision", "eval", str(tmp_path / "wrong.pt"), "--attacks", "fgsm"]) == 2
    assert "another model" in capsys.readouterr().err
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert main(["vision", "eval", str(tmp_path / "garbage.pt")]) == 2


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["vision", "train", "--method", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["vision", "train", "--eps", "2", "--runs-dir", str(tmp_path)]) == 2
    for _ in range(2):  # the failed start does not make the name collide
        assert main(["vision", "train", "--dataset", "mnist", "--data-dir", str(tmp_path / "x"),
                     "--runs-dir", str(tmp_path), "--name", "m"]) == 2
        assert "does not exist" in capsys.readouterr().err
