"""The prover–verifier chapter's typed config, the paper's reference numbers and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params prover_verifier``
is instant.  The runs are built in :mod:`repro.chapters.prover_verifier.experiments`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, ProfileConfig, param
from ...scorecard import CHECK, FINDING, Claim, Greater, Holds

# The paper's numbers (fact sheet /work/shared/papers/prover_verifier.md; Kirchner et al. 2024, arXiv 2407.13692)
PAPER = {"correctness_only_accuracy": (0.43, 0.85), "correctness_only_human_accuracy": (0.82, 0.73),
         "checkability_human_accuracy_helpful": (0.76, 0.83), "rounds": 5, "human_seconds": 45}

Z = 2.0            # margin in standard errors
MIN_SEEDS = 3      # seeds for a finding at book
MIN_PROVER_ACCURACY = 0.5   # the supervised prover must solve half the problems for the game to mean anything

_toy = "the toy game (smoke/book profiles)"
_paired = f"paired per seed over ≥ {MIN_SEEDS} seeds, difference beyond {Z:g} s.e."

CLAIMS = (
    Claim("robustness-rises", FINDING,
          f"The verifier gets more robust over rounds: the RL steps a sneaky-only attacker (started from the "
          f"supervised prover) needs before its incorrect solutions score on average as high as the helpful "
          f"prover's correct ones, against the last round's verifier vs the first round's; {_paired}",
          "sneaky-only attackers need more RL steps to find an exploit against later verifiers",
          Greater("attacker RL steps to match helpful-correct scores", "last round", "first round", z=Z,
                  paired=True, min_seeds=MIN_SEEDS),
          needs=_toy),
    Claim("checkability-legible", FINDING,
          f"Checkability training makes the helpful prover more legible: the time-limited checker's accuracy on "
          f"the helpful role's solutions after the last round vs the supervised prover's; {_paired}",
          "time-limited humans check the helpful prover's solutions more accurately over rounds (~0.76 → ~0.83)",
          Greater("checker accuracy on helpful solutions", "last round", "supervised prover", z=Z, paired=True,
                  min_seeds=MIN_SEEDS),
          needs=_toy),
    Claim("correctness-illegible", FINDING,
          f"Correctness-only RL makes solutions less legible: the checker's accuracy on the helpful role's "
          f"solutions of the supervised prover vs after correctness-only RL (as many RL steps as all rounds "
          f"together); {_paired}",
          "correctness-only training lowers time-limited human accuracy (~0.82 → ~0.73)",
          Greater("checker accuracy on helpful solutions", "supervised prover", "correctness-only RL", z=Z,
                  paired=True, min_seeds=MIN_SEEDS),
          needs=_toy),
    Claim("sneaky-fools-more", FINDING,
          f"Sneaky solutions fool the checker more over rounds: the share of the sneaky role's incorrect "
          f"solutions the checker accepts, after the last round vs the supervised prover's; {_paired}",
          "time-limited humans are fooled more by later sneaky provers",
          Greater("share of sneaky incorrect solutions the checker accepts", "last round", "supervised prover",
                  z=Z, paired=True, min_seeds=MIN_SEEDS),
          needs=_toy),
    Claim("legibility-tax", FINDING,
          f"The legibility tax: correctness-only RL reaches a higher accuracy than the helpful role after "
          f"checkability training with as many RL steps; {_paired}",
          "the legible prover is less accurate than the correctness-only one (accuracy ~0.43 → ~0.85 for "
          "correctness-only)",
          Greater("helpful accuracy", "correctness-only RL", "checkability training", z=Z, paired=True,
                  min_seeds=MIN_SEEDS),
          needs=_toy),
    Claim("prover-competent", CHECK,
          f"The supervised prover solves at least {MIN_PROVER_ACCURACY:.0%} of held-out problems in the helpful "
          f"role in every seed (sampling at temperature 1), so the game starts from a prover worth checking",
          "—",
          Holds(f"helpful accuracy ≥ {MIN_PROVER_ACCURACY:.0%} in every seed"),
          needs=_toy),
    Claim("hf-pipeline", CHECK,
          "The paper profile's engine (a local Hugging Face prover and a smaller verifier on GSM8K-format data) "
          "plays its rounds with checkpoints",
          "—",
          Holds("every round's numbers are finite"),
          needs="the paper profile with hf_prover, hf_verifier and data_path set (a GPU)"),
)


@dataclass(frozen=True)
class ProverVerifierConfig(ProfileConfig):
    """The toy prover–verifier game: task, models, rounds, rewards, the checker, seeds and budget."""

    # the task
    pool: int = param(60_000, "problems generated per seed (split into a prover half and a verifier half)", min=4)
    operators: str = param("+-*", "operators of the problems (a subset of +-*)")
    min_ops: int = param(3, "fewest operations per problem", min=1)
    max_ops: int = param(6, "most operations per problem", min=1)
    # the models
    prover_d: int = param(64, "prover width", min=8)
    prover_layers: int = param(2, "prover layers", min=1)
    verifier_d: int = param(16, "verifier width (the prover's is larger)", min=8)
    verifier_layers: int = param(1, "verifier layers", min=1)
    # training
    sft_steps: int = param(1500, "supervised steps of the prover", min=1)
    verifier_steps: int = param(300, "Bradley–Terry steps per round (from the initial weights)", min=1)
    verifier_samples: int = param(512, "verifier-half problems the prover writes solutions for each round", min=1)
    rounds: int = param(3, "rounds of the game (verifier, then prover RL)", min=1)
    rl_steps: int = param(40, "prover RL steps per round", min=1)
    rl_batch: int = param(64, "solutions per RL step", min=2)
    rl_lr: float = param(3e-4, "prover RL learning rate", min=0.0)
    kl_coef: float = param(0.02, "KL penalty to the supervised prover", min=0.0)
    reward: str = param("src", "prover reward", choices=("src", "cgc", "goodhart"))
    attacker_steps: int = param(30, "cap of the attacker probe (RL steps)", min=1)
    checker_budget: int = param(8, "elementary operations the time-limited checker may spend per solution", min=1)
    eval_problems: int = param(128, "held-out problems per evaluation", min=1)
    n_seeds: int = param(3, "seeds (seed, seed+1, ...)", min=1)
    workers: int = param(2, "processes the seeds are spread over (1: in the notebook's process)", min=1, max=64)
    # paper profile: real language models
    hf_prover: str = param("", "paper: path of a local Hugging Face causal LM (the prover)")
    hf_verifier: str = param("", "paper: path of a smaller local causal LM (the verifier)")
    data_path: str = param("", "paper: GSM8K-format JSONL (question, answer with '#### n')")
    checkpoint_dir: str = param("", "paper: where the rounds checkpoint ('' = <run folder>/checkpoints)")
    hf_rl_steps: int = param(50, "paper: prover RL steps per round", min=1)
    hf_batch: int = param(16, "paper: solutions per RL step", min=2)
    hf_max_new_tokens: int = param(256, "paper: longest solution in tokens", min=1)
    hf_verifier_samples: int = param(256, "paper: verifier-half problems per round (both roles)", min=1)
    hf_verifier_steps: int = param(200, "paper: Bradley–Terry steps per round", min=1)
    hf_eval_problems: int = param(128, "paper: held-out problems per evaluation", min=1)

    PROFILES = {
        "smoke": dict(pool=400, sft_steps=30, verifier_steps=10, verifier_samples=16, rounds=2, rl_steps=3,
                      rl_batch=16, attacker_steps=3, eval_problems=16, n_seeds=2, prover_d=32, verifier_d=16,
                      verifier_layers=1),
        "book": dict(),
        "paper": dict(rounds=PAPER["rounds"]),
    }

    def check(self) -> None:
        if not self.operators or any(op not in "+-*" for op in self.operators) or \
                len(set(self.operators)) != len(self.operators):
            raise ConfigError(f"operators must be distinct characters of '+-*', got {self.operators!r}")
        if self.min_ops > self.max_ops:
            raise ConfigError("min_ops must not exceed max_ops")
        if self.verifier_d * self.verifier_layers >= self.prover_d * self.prover_layers:
            raise ConfigError("the verifier must be smaller than the prover (verifier_d x layers < prover's)")
        for d, name in ((self.prover_d, "prover_d"), (self.verifier_d, "verifier_d")):
            if d % 4:
                raise ConfigError(f"{name} must be a multiple of 4 (the attention heads)")
        if self.profile == "paper" and self.hf_prover and not (self.hf_verifier and self.data_path):
            raise ConfigError("the paper profile needs hf_prover, hf_verifier and data_path together")

    @property
    def uses_hf(self) -> bool:
        """True when the paper profile's language models are given."""
        return bool(self.hf_prover)
