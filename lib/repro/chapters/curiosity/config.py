"""The curiosity chapter's typed config, the paper's reference facts and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params curiosity`` is
instant.  The training runs these settings describe are built in
:mod:`repro.chapters.curiosity.experiments`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, ProfileConfig, param
from ...launch import DataParallelParams
from ...scorecard import CHECK, FINDING, Above, Claim, Greater, Holds, Within

FEATURES = ("rf", "idf", "pixels")
FEATURE_LABELS = {"rf": "random features (RF)", "idf": "inverse-dynamics features (IDF)", "pixels": "pixels",
                  "random": "random policy"}
TV_METHODS = ("curiosity", "curiosity_tv", "rnd_tv")
TV_LABELS = {"curiosity": "dynamics curiosity, no TV", "curiosity_tv": "dynamics curiosity, noisy TV",
             "rnd_tv": "RND, noisy TV"}
MINATAR_GAMES = ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1", "MinAtar/Freeway-v1",
                 "MinAtar/Seaquest-v1")
ATARI_GAMES = ("ALE/Breakout-v5", "ALE/SpaceInvaders-v5", "ALE/Seaquest-v5", "ALE/MontezumaRevenge-v5")

# The paper's setup (fact sheet /work/shared/papers/curiosity.md; Burda et al., ICLR 2019, arXiv 1808.04355)
PAPER_SETUP = {"envs": 128, "rollout": 128, "epochs": 3, "minibatches": 8, "lr": 1e-4, "entropy": 1e-3,
               "clip": 0.1, "gamma": 0.99, "lambda": 0.95, "steps_per_game": 100_000_000, "feature_dim": 512,
               "residual_blocks": 4, "frame_stack": 4, "frameskip": 4}

# What the findings measure (the statements below are built from these, so text and rule agree)
RETURN_TAIL = 0.25     # "final" = the episodes that ended in the last 25% of updates
Z = 2.0                # margin in standard errors
MIN_SEEDS = 3          # seeds per agent for a finding at book
TV_CHANCE = 1 / 4      # a uniformly random policy's share at the TV: rooms' left, right, forward + the remote
RF_IDF_TOL = 0.20      # "RF within 20% of IDF" (the margin chosen in the issue, before the runs)
NEAR_CHANCE = 0.10     # "near chance": the TV share within 0.10 of TV_CHANCE
PAPER_MIN_SEEDS = 2    # seeds per agent at the paper profile

_tail = f"last {RETURN_TAIL:.0%} of updates"
_game = "a MinAtar game (smoke/book profiles)"
_rooms = "the rooms gridworld with a noisy TV (smoke/book profiles)"


def _scores(label: str, key: str) -> Claim:
    return Claim(
        f"curious-{key}-scores", FINDING,
        f"A purely curious agent with {label}, never shown the game's reward, ends training with a higher game "
        f"score than a uniformly random policy: per seed, the mean extrinsic return of the episodes that ended in "
        f"the {_tail}, against the random policy's mean episodic return over as many steps; ≥ {MIN_SEEDS} seeds "
        f"each, difference beyond {Z:g} s.e.",
        "purely curious agents gain extrinsic reward on many Atari games (the objective is aligned with the "
        "hand-designed rewards)",
        Greater(f"mean episodic game score, {_tail}", label.split(" (")[0], "random policy", z=Z,
                min_seeds=MIN_SEEDS),
        needs=_game)


CLAIMS = (
    _scores("random features (RF)", "rf"),
    _scores("inverse-dynamics features (IDF)", "idf"),
    Claim("rf-beats-pixels", FINDING,
          f"Random features beat raw pixels as the space curiosity predicts in: per seed, the mean extrinsic "
          f"return of the episodes that ended in the {_tail}, RF vs pixels agents; ≥ {MIN_SEEDS} seeds each, "
          f"difference beyond {Z:g} s.e.",
          "random features are a simple, strong baseline; pixels work poorly",
          Greater(f"mean episodic game score, {_tail}", "RF", "pixels", z=Z, min_seeds=MIN_SEEDS),
          needs=_game),
    Claim("rf-near-idf", FINDING,
          f"Random features are about as good as inverse-dynamics features: per seed, (RF score − IDF score) / IDF "
          f"score for the agents with the same seed (score: the mean extrinsic return of the episodes that ended "
          f"in the {_tail}); the mean over ≥ {MIN_SEEDS} seeds within ±{RF_IDF_TOL:.0%} of 0, including "
          f"{Z:g} s.e.",
          "random features are a simple, strong baseline; IDF beats RF on a small majority of Atari games",
          Within("relative score difference (RF − IDF) / IDF, same seed", 0.0, RF_IDF_TOL, z=Z,
                 min_seeds=MIN_SEEDS),
          needs=_game),
    Claim("tv-traps-curiosity", FINDING,
          f"Dynamics curiosity gets stuck on a noisy TV: per seed, the share of steps in the {_tail} on which the "
          f"agent pressed the TV's remote; the mean over ≥ {MIN_SEEDS} seeds above the share of a uniformly "
          f"random policy ({TV_CHANCE:g}: 1 / number of actions) by more than {Z:g} s.e.",
          "in stochastic setups (an action that shows a random image) prediction-error curiosity gets stuck on "
          "the noise source",
          Above(f"share of steps watching the TV, {_tail}", TV_CHANCE, z=Z, min_seeds=MIN_SEEDS),
          needs=_rooms),
    Claim("tv-costs-exploration", FINDING,
          f"The noisy TV costs dynamics curiosity its exploration: per seed, the number of distinct cells visited "
          f"so far averaged over all updates (the area under the coverage curve), without vs with the TV; "
          f"≥ {MIN_SEEDS} seeds each, difference beyond {Z:g} s.e.",
          "a curious agent distracted by the noise source stops exploring",
          Greater("distinct cells visited, mean over updates", "no TV", "noisy TV", z=Z, min_seeds=MIN_SEEDS),
          needs=_rooms),
    Claim("rnd-ignores-tv", FINDING,
          f"RND, whose target is a deterministic function of the state, watches the same noisy TV less than "
          f"dynamics curiosity: per seed, the share of steps in the {_tail} spent pressing the remote, dynamics "
          f"curiosity vs RND; ≥ {MIN_SEEDS} seeds each, difference beyond {Z:g} s.e.",
          "prediction error of a deterministic target is not distracted by irreducible noise (the RND paper's "
          "argument, the curiosity paper's stated limitation)",
          Greater(f"share of steps watching the TV, {_tail}", "dynamics curiosity", "RND", z=Z,
                  min_seeds=MIN_SEEDS),
          needs=_rooms),
    Claim("rnd-tv-near-chance", FINDING,
          f"RND's share of steps at the noisy TV stays near chance: per seed, the share of steps in the {_tail} "
          f"spent pressing the remote; the mean over ≥ {MIN_SEEDS} seeds within ±{NEAR_CHANCE:g} of a uniformly "
          f"random policy's {TV_CHANCE:g}, including {Z:g} s.e.",
          "a deterministic target leaves no irreducible error, so RND is not drawn to the noise source (the RND "
          "paper's argument for preferring it to dynamics prediction)",
          Within(f"share of steps watching the TV, {_tail}", TV_CHANCE, NEAR_CHANCE, z=Z, min_seeds=MIN_SEEDS),
          needs=_rooms),
    Claim("more-envs-help", FINDING,
          f"More parallel environments (a larger batch per update) at the same number of agent steps give a "
          f"purely curious RF agent a higher final game score: per seed, the mean extrinsic return of the "
          f"episodes that ended in the {_tail}, most vs fewest environments; ≥ {MIN_SEEDS} seeds each, "
          f"difference beyond {Z:g} s.e.",
          "larger batches (more parallel environments) help",
          Greater(f"mean episodic game score, {_tail}", "most envs", "fewest envs", z=Z, min_seeds=MIN_SEEDS),
          needs="the parallel-environments sweep with ≥ 3 seeds per setting (env_sweep_seeds ≥ 3)"),
    Claim("atari-pipeline", CHECK,
          "The paper profile's pipeline (an ALE game with the RND chapter's Atari preprocessing and policy "
          "network, random features and the paper's forward model at its sizes) runs a short rollout of 2 "
          "environments and one pure-curiosity PPO update with finite losses on this machine (steps/s shown)",
          "—",
          Holds("every loss and statistic of the update is finite"),
          needs="probe_atari_steps > 0 (book profile)"),
)


@dataclass(frozen=True)
class CuriosityConfig(DataParallelParams, ProfileConfig):
    """Purely curious agents on a game, the noisy TV in the rooms gridworld, and the batch-size sweep
    (``nproc`` etc.: data-parallel training under torchrun, :mod:`repro.launch`)."""

    # experiment 1: pure curiosity on a game
    env: str = param("MinAtar/Breakout-v1", "the game purely curious agents play", choices=MINATAR_GAMES + ATARI_GAMES)
    features: tuple[str, ...] = param(FEATURES, "feature spaces the forward model predicts in", choices=FEATURES)
    n_seeds: int = param(3, "seeds per agent (seed, seed+1, ...)", min=1)
    num_envs: int = param(16, "parallel environments N", min=1)
    num_steps: int = param(64, "rollout length T per update", min=2)
    total_steps: int = param(102_400, "agent steps per run (all envs together, excluding the random walk)", min=1)
    sticky: float = param(0.1, "MinAtar: probability of repeating the previous action", min=0.0, max=1.0)
    policy_hidden: int = param(128, "policy network width (MinAtar: FC after the conv)", min=1)
    feat_dim: int = param(64, "feature size of phi (paper: 512)", min=1)
    dyn_hidden: int = param(64, "forward model width (paper: 512)", min=1)
    n_residual: int = param(2, "residual blocks of the forward model (paper: 4)", min=0)
    lr: float = param(5e-4, "Adam learning rate", min=0.0)
    epochs: int = param(3, "PPO epochs per update", min=1)
    minibatches: int = param(4, "minibatches per epoch", min=1)
    clip_coef: float = param(0.1, "PPO clip range epsilon", min=0.0)
    ent_coef: float = param(1e-3, "entropy bonus coefficient", min=0.0)
    vf_coef: float = param(0.5, "value loss coefficient", min=0.0)
    gamma: float = param(0.99, "discount of the intrinsic return", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    random_walk_steps: int = param(32, "random-agent steps per env before training; they fix the observation "
                                   "statistics the features whiten with", min=0)
    # experiment 2: the noisy TV
    tv_methods: tuple[str, ...] = param(TV_METHODS, "agents of the noisy-TV experiment", choices=TV_METHODS)
    tv_images: int = param(16, "pictures the TV can show (one drawn per run, shared by its envs)", min=1)
    tv_total_steps: int = param(102_400, "agent steps per noisy-TV run", min=1)
    tv_num_envs: int = param(16, "parallel gridworld environments", min=1)
    tv_num_steps: int = param(128, "gridworld rollout length", min=2)
    tv_lr: float = param(1e-3, "Adam learning rate, gridworld agents", min=0.0)
    tv_ent_coef: float = param(0.01, "entropy coefficient, gridworld agents", min=0.0)
    room_size: int = param(5, "rooms task: cells per room side", min=2)
    rooms_per_side: int = param(3, "rooms task: rooms per side", min=2)
    max_episode_steps: int = param(400, "rooms task: steps before an episode is truncated", min=10)
    # experiment 3: the number of parallel environments
    env_sweep: tuple[int, ...] = param((4, 64), "extra numbers of parallel envs for the RF agent, same total "
                                       "steps and rollout length (the main runs give num_envs)", min=1)
    env_sweep_seeds: int = param(3, "seeds per sweep setting", min=0)
    # running
    workers: int = param(2, "processes the runs are spread over (1: in the notebook's process)", min=1, max=64)
    checkpoint_every: int = param(0, "save each run's training state every this many updates (0: never)", min=0)
    checkpoint_dir: str = param("", "where checkpoints live; a run finding its checkpoint there resumes "
                                "('' = <run folder>/checkpoints)")
    progress_every_s: float = param(30.0, "seconds between progress lines of each run (0: none)", min=0.0)
    probe_atari_steps: int = param(0, "rollout steps of the ALE pipeline probe with the paper's sizes (0: skip)",
                                   min=0)

    PROFILES = {
        "smoke": dict(n_seeds=2, num_envs=4, num_steps=16, total_steps=4 * 16 * 3, tv_total_steps=8 * 16 * 3,
                      tv_num_envs=8, tv_num_steps=16, max_episode_steps=40, random_walk_steps=8, env_sweep=(2,),
                      env_sweep_seeds=1, progress_every_s=0.0, minibatches=2),
        "book": dict(probe_atari_steps=32),
        "paper": dict(env="ALE/Breakout-v5", features=("rf", "idf", "pixels"), n_seeds=PAPER_MIN_SEEDS,
                      num_envs=128, num_steps=128, total_steps=PAPER_SETUP["steps_per_game"], policy_hidden=512,
                      feat_dim=512, dyn_hidden=512, n_residual=4, lr=1e-4, epochs=3, minibatches=8, clip_coef=0.1,
                      ent_coef=1e-3, vf_coef=1.0, gamma=0.99, random_walk_steps=50 * 128, tv_methods=(),
                      env_sweep=(32,), env_sweep_seeds=PAPER_MIN_SEEDS, workers=1, checkpoint_every=100,
                      progress_every_s=60.0),
    }

    def check(self) -> None:
        """Cross-field rules: minibatches divide every rollout, at least one rollout per run, no repeats."""
        for n in (self.num_envs, *self.env_sweep):
            if (n * self.num_steps) % self.minibatches:
                raise ConfigError(f"num_envs ({n}) * num_steps must be divisible by minibatches")
            if self.total_steps < n * self.num_steps:
                raise ConfigError(f"total_steps must cover at least one rollout of {n} envs x num_steps")
        if self.tv_methods:
            if (self.tv_num_envs * self.tv_num_steps) % self.minibatches:
                raise ConfigError("tv_num_envs * tv_num_steps must be divisible by minibatches")
            if self.tv_total_steps < self.tv_num_envs * self.tv_num_steps:
                raise ConfigError("tv_total_steps must cover at least one rollout (tv_num_envs * tv_num_steps)")
        for name in ("features", "tv_methods", "env_sweep"):
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ConfigError(f"{name} must not repeat")
        if self.num_envs in self.env_sweep:
            raise ConfigError("env_sweep lists extra settings: leave out num_envs, which the main runs cover")
        envs = (self.num_envs, *self.env_sweep) + ((self.tv_num_envs,) if self.tv_methods else ())
        self.check_data_parallel(env_counts=envs, checkpoint_dir=self.checkpoint_dir)

    @property
    def is_atari(self) -> bool:
        """True for an ALE game (the paper profile)."""
        return self.env.startswith("ALE/")

    def updates(self, total_steps: int, num_envs: int, num_steps: int) -> int:
        """PPO updates of a run: total_steps // (num_envs * num_steps)."""
        return total_steps // (num_envs * num_steps)
