"""The Codex chapter's package: config without torch, the claims' rules, checkpoints, module layering."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.chapters.codex.config import BLEU_AUC_MAX, CLAIMS, PASSK_RATIO_MIN, TABLE1, TABLE1_TOL_POINTS, CodexConfig
from repro.checkpoint import CheckpointMismatch
from repro.config import ConfigError
from repro.scorecard import FINDING, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Scorecard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]


def test_params_command_lists_the_new_parameters():
    out = subprocess.run([sys.executable, "-m", "repro", "params", "codex"], check=True, capture_output=True,
                         text=True).stdout
    assert "paper_model" in out and "checkpoint_every" in out


def test_algorithm_modules_import_nothing_chapter_specific():
    for path in (ROOT / "lib/repro/codex").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any("chapters" in m or m.endswith("config") for m in names), (path.name, names)
        assert "ProfileConfig" not in path.read_text(), path.name


def test_worker_is_stdlib_only():
    tree = ast.parse((ROOT / "lib/repro/codex/_worker.py").read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert mods <= set(sys.stdlib_module_names) | {"__future__"}, mods


def test_paper_model_is_a_table1_row_and_needs_a_model():
    assert CodexConfig.for_profile("paper", hf_model="/m", paper_model="Codex-300M").paper_model in TABLE1
    with pytest.raises(ConfigError):
        CodexConfig.for_profile("paper", hf_model="/m", paper_model="Codex-7B")
    with pytest.raises(ConfigError):
        CodexConfig.for_profile("paper", paper_model="Codex-12B")


def test_every_claim_kind_and_no_figure_numbers():
    kinds = {c.id: c.kind for c in CLAIMS}
    assert kinds["passk-rises"] == "theorem" and kinds["unbiased-estimator"] == "theorem"
    for cid in ("harness-canonical", "harness-hostile", "harness-speed", "harness-agreement", "passk-exact",
                "humaneval-table"):
        assert kinds[cid] == "check", cid
    for c in CLAIMS:  # the fact sheet gives no figure numbers
        assert "fig" not in (c.statement + c.paper).lower(), c.id
    assert f"{PASSK_RATIO_MIN:g}" in next(c for c in CLAIMS if c.id == "passk-ratio").statement
    assert f"{BLEU_AUC_MAX:g}" in next(c for c in CLAIMS if c.id == "bleu-overlap").statement
    assert f"{TABLE1_TOL_POINTS:g}" in next(c for c in CLAIMS if c.id == "humaneval-pass1").statement


# Synthetic per-seed (per-model) values that must give each status, for every finding.
CASES = {
    "passk-ratio": ({"values": [3.0, 3.2, 2.9]}, {"values": [2.1, 1.8, 2.4]}, {"values": [1.5, 1.6, 1.4]}),
    "best-temperature": ({"a": [0.8, 1.1, 0.8], "b": [0.2, 0.2, 0.5]},
                         {"a": [0.8, 0.2, 0.5], "b": [0.2, 0.5, 0.2]},
                         {"a": [0.2, 0.2, 0.5], "b": [0.5, 0.2, 0.5]}),
    "ranking": ({"a": [0.5, 0.55, 0.6], "b": [0.4, 0.42, 0.45]},
                {"a": [0.5, 0.4, 0.6], "b": [0.45, 0.45, 0.5]},
                {"a": [0.3, 0.35, 0.3], "b": [0.4, 0.42, 0.45]}),
    "chained-ops": ({"a": [0.6, 0.5, 0.55], "b": [0.05, 0.1, 0.02]},
                    {"a": [0.3, 0.1, 0.2], "b": [0.1, 0.3, 0.05]},
                    {"a": [0.1, 0.1, 0.1], "b": [0.2, 0.3, 0.2]}),
    "bleu-overlap": ({"values": [0.55, 0.6, 0.58]}, {"values": [0.7, 0.8, 0.72]}, {"values": [0.9, 0.85, 0.88]}),
    "humaneval-pass1": ({"values": [0.5, -0.5, 1.0, -1.0, 0.2, 0.1]}, {"values": [2.0, 4.0, -1.0, 6.0, 0.0, 3.0]},
                        {"values": [8.0, 9.0, 10.0, 7.0, 8.5, 9.5]}),
}


@pytest.mark.parametrize("cid", sorted(CASES))
def test_finding_rules_on_synthetic_values(cid):
    expected = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED)
    for values, status in zip(CASES[cid], expected):
        sc = Scorecard("codex", "book", CLAIMS)
        row = sc.evaluate(cid, **values)
        assert row.kind == FINDING and row.status == status, (cid, values, row)


def test_every_finding_has_synthetic_cases():
    findings = {c.id for c in CLAIMS if c.kind == FINDING}
    assert findings - set(CASES) <= {"humaneval-pass10", "humaneval-pass100"}  # same rule as pass1


def test_one_model_is_never_enough():
    sc = Scorecard("codex", "smoke", CLAIMS)
    assert sc.evaluate("ranking", a=[0.9], b=[0.1]).status == INCONCLUSIVE


# ---------------------------------------------------------------- checkpoints

def _tiny_training(tmp_path, **kw):
    from repro.codex import model as codex_model, tasks
    tok = codex_model.Tokeniser.for_tasks()
    split = tasks.make_split(3, 2, 2, seed=0)
    data = codex_model.build_training_data(tok, split.train, 200, 0, torch.device("cpu"))
    args = dict(steps=12, batch=8, lr=5e-3, d=16, n_layer=1, n_head=2, seed=3, device=torch.device("cpu"),
                log_every=4)
    args.update(kw)
    return codex_model, tok, data, args


def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    codex_model, tok, data, args = _tiny_training(tmp_path)
    ref, ref_hist = codex_model.train_model(tok, data, **args)
    ckpt = tmp_path / "model.pt"
    real_save = codex_model.save_checkpoint

    def save_then_crash(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt  # the run dies right after its first checkpoint (step 5)

    monkeypatch.setattr(codex_model, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **args)
    monkeypatch.setattr(codex_model, "save_checkpoint", real_save)
    resumed, hist = codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **args)
    assert hist["step"] == ref_hist["step"] and hist["loss"] == pytest.approx(ref_hist["loss"], abs=0, rel=0)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    again, hist2 = codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **args)  # finished
    assert hist2["loss"] == hist["loss"] and all(torch.equal(a, b) for a, b in
                                                 zip(again.state_dict().values(), resumed.state_dict().values()))


def test_checkpoint_of_other_hyperparameters_is_refused(tmp_path):
    codex_model, tok, data, args = _tiny_training(tmp_path)
    ckpt = tmp_path / "model.pt"
    codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **args)
    with pytest.raises(CheckpointMismatch):
        codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **{**args, "lr": 1e-3})
    with pytest.raises(CheckpointMismatch):
        codex_model.train_model(tok, data, checkpoint=ckpt, checkpoint_every=5, **{**args, "seed": 4})


def test_passk_analyses():
    from repro.chapters.codex.experiments import passk_nondecreasing, passk_ratio, table1_deviation
    tab = np.array([[[0.1, 0.3], [0.2, 0.5]], [[0.0, 0.2], [0.0, 0.1]]])  # [model, T, K]
    r = passk_ratio(tab)
    assert r[0] == pytest.approx(0.5 / 0.2) and np.isnan(r[1])
    assert passk_nondecreasing(tab) and not passk_nondecreasing(tab[..., ::-1])
    hf = {"per_problem": {0.2: {1: np.array([0.3, 0.1])}, 0.8: {1: np.array([0.2, 0.1])}}}
    assert table1_deviation(hf, "Codex-12B", 1) == pytest.approx([30 - 28.81, 10 - 28.81])
