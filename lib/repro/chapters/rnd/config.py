"""The RND chapter's typed config, the paper's reference values and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params rnd`` is instant.
The training runs these settings describe are built in
:mod:`repro.chapters.rnd.experiments`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, ProfileConfig, param
from ...launch import DataParallelParams
from ...scorecard import CHECK, FINDING, Above, Below, Claim, Greater, Holds

METHODS = ("ppo", "rnd_episodic", "rnd")
METHOD_LABELS = {"ppo": "PPO", "rnd_episodic": "PPO+RND (episodic int.)", "rnd": "PPO+RND (non-episodic int.)"}
ENVS = ("rooms", "ALE/MontezumaRevenge-v5")

# The paper's results table (mean episodic return), from the fact sheet /work/shared/papers/rnd.md
# (Burda, Edwards, Storkey, Klimov 2018, arXiv 1810.12894).
PAPER_RETURNS = {
    "Montezuma's Revenge": {"RND": 8152, "PPO": 2497, "dynamics": 400, "human": 4753},
    "Gravitar": {"RND": 3906, "PPO": 3426, "dynamics": 3371, "human": 3351},
    "Pitfall!": {"RND": -3, "PPO": 0, "dynamics": 0, "human": 6464},
    "Private Eye": {"RND": 8666, "PPO": 105, "dynamics": 33, "human": 69571},
    "Solaris": {"RND": 3282, "PPO": 3387, "dynamics": 3246, "human": 12327},
    "Venture": {"RND": 1859, "PPO": 0, "dynamics": 1712, "human": 1188},
}
PAPER_ROOMS = "best agents find 22 of the 24 rooms of Montezuma's first level"

# What the findings measure (the statements below are built from these, so text and rule agree)
RETURN_TAIL = 0.25        # "final" = the episodes that ended in the last 25% of updates
BONUS_QUANTILE = 0.10     # most- / least-visited tenth of the cells in the bonus maps
# bonus ratios span orders of magnitude across seeds, so their rules average log10(ratio)
Z = 2.0                   # margin in standard errors
MIN_SEEDS = 3             # seeds per method for a finding at book
PAPER_MIN_SEEDS = 2       # seeds per method at the paper profile (GPU days per run)
MIN_GRID_SPS = 500        # throughput check: gridworld env steps/s (updates included), one CPU thread

_tail = f"last {RETURN_TAIL:.0%} of updates"
_q = f"{BONUS_QUANTILE:.0%}"
_grid = "the rooms gridworld (smoke/book profiles)"
_paper = "the paper profile (Montezuma's Revenge, 128 envs, ~1.97B frames per run: GPU days)"

CLAIMS = (
    Claim("rnd-return", FINDING,
          f"PPO+RND (non-episodic intrinsic return) ends training with a higher mean episodic extrinsic return "
          f"than plain PPO on the rooms gridworld: per seed, the mean return of the episodes that ended in the "
          f"{_tail}; compared over ≥ {MIN_SEEDS} seeds per method, difference beyond {Z:g} s.e.",
          "mean episodic return on Montezuma's Revenge: RND 8,152 vs PPO 2,497",
          Greater(f"mean episodic extrinsic return, {_tail}", "PPO+RND", "PPO", z=Z, min_seeds=MIN_SEEDS),
          needs=_grid),
    Claim("rnd-finds-reward", FINDING,
          f"PPO+RND (non-episodic) reaches the goal in more episodes than plain PPO: per seed, the number of "
          f"episodes over the whole run that ended on the goal; compared over ≥ {MIN_SEEDS} seeds per method, "
          f"difference beyond {Z:g} s.e.",
          "RND finds rewards PPO misses (Montezuma: 8,152 vs 2,497; Venture: 1,859 vs 0; Private Eye: 8,666 vs 105)",
          Greater("episodes reaching the goal per run", "PPO+RND", "PPO", z=Z, min_seeds=MIN_SEEDS),
          needs=_grid),
    Claim("rnd-explores", FINDING,
          f"PPO+RND (non-episodic) explores the rooms gridworld faster than plain PPO: per seed, the number of "
          f"distinct cells visited so far, averaged over all updates of training (the area under the coverage "
          f"curve; the count at the end saturates at the grid's size); both methods after the same random walk "
          f"and the same number of agent steps; compared over ≥ {MIN_SEEDS} seeds per method, difference beyond "
          f"{Z:g} s.e.",
          PAPER_ROOMS,
          Greater("distinct cells visited, mean over updates", "PPO+RND", "PPO", z=Z, min_seeds=MIN_SEEDS),
          needs=_grid),
    Claim("bonus-consumed", FINDING,
          f"Novelty is consumed: in each non-episodic PPO+RND seed, the mean bonus on the {_q} most-visited cells "
          f"at the last map divided by the same at the first map; the log10 of this ratio, averaged over "
          f"≥ {MIN_SEEDS} seeds, below 0 (ratio below 1) by more than {Z:g} s.e.",
          "the prediction error of frequently visited states decays (the method's premise)",
          Below(f"log10 bonus ratio last/first map on the {_q} most-visited cells", 0.0, z=Z, min_seeds=MIN_SEEDS),
          needs="intrinsic-reward maps of the rooms gridworld (n_maps >= 2, smoke/book profiles)"),
    Claim("bonus-tracks-novelty", FINDING,
          f"The bonus is higher on rarely visited states: at the last map of each non-episodic PPO+RND seed, the "
          f"mean bonus on the {_q} least-visited visited cells divided by that on the {_q} most-visited; the "
          f"log10 of this ratio, averaged over ≥ {MIN_SEEDS} seeds, above 0 (ratio above 1) by more than "
          f"{Z:g} s.e.",
          "prediction error is higher on novel states (the method's premise)",
          Above("log10 bonus ratio rare/frequent cells at the last map", 0.0, z=Z, min_seeds=MIN_SEEDS),
          needs="intrinsic-reward maps of the rooms gridworld (n_maps >= 1, smoke/book profiles)"),
    Claim("non-episodic-better", FINDING,
          f"A non-episodic intrinsic return beats an episodic one: per seed, the number of episodes over the run "
          f"that ended on the goal, PPO+RND non-episodic vs episodic; compared over ≥ {MIN_SEEDS} seeds per "
          f"method, difference beyond {Z:g} s.e.",
          "non-episodic intrinsic return explores better than episodic (Montezuma's Revenge)",
          Greater("episodes reaching the goal per run", "non-episodic", "episodic", z=Z, min_seeds=MIN_SEEDS),
          needs=_grid + " with both RND variants"),
    Claim("montezuma-return", FINDING,
          f"On Montezuma's Revenge with the paper's setup, PPO+RND ends training with a higher mean episodic "
          f"return than plain PPO: per seed, the mean return of the episodes that ended in the {_tail}; "
          f"≥ {PAPER_MIN_SEEDS} seeds per method, difference beyond {Z:g} s.e.",
          "RND 8,152 vs PPO 2,497 mean episodic return",
          Greater(f"mean episodic return, {_tail}", "PPO+RND", "PPO", z=Z, min_seeds=PAPER_MIN_SEEDS),
          needs=_paper),
    Claim("grid-throughput", CHECK,
          f"The gridworld agents run at ≥ {MIN_GRID_SPS} environment steps per second (PPO and RND updates "
          "included) on one CPU thread, mean over all runs",
          "—",
          Holds(f"mean env steps/s ≥ {MIN_GRID_SPS}"),
          needs=_grid),
    Claim("montezuma-pipeline", CHECK,
          "The paper profile's pipeline (Montezuma's Revenge with the paper's preprocessing, policy and RND "
          "networks, RND on the last frame) runs a short rollout of 2 envs and one PPO+RND update with finite "
          "losses on this machine (steps/s shown)",
          "—",
          Holds("every loss and statistic of the update is finite"),
          needs="probe_montezuma_steps > 0 (book profile)"),
)


@dataclass(frozen=True)
class RNDConfig(DataParallelParams, ProfileConfig):
    """PPO vs PPO+RND: the task, the agents' hyperparameters, seeds and budget (``nproc`` etc.: data-parallel
    training under torchrun, :mod:`repro.launch`)."""

    env: str = param("rooms", "task: the rooms gridworld or an Atari game", choices=ENVS)
    room_size: int = param(5, "rooms task: cells per room side", min=2)
    rooms_per_side: int = param(3, "rooms task: rooms per side of the square layout", min=2)
    max_episode_steps: int = param(400, "rooms task: steps before an episode is truncated", min=10)
    methods: tuple[str, ...] = param(METHODS, "which agents to train", choices=METHODS)
    n_seeds: int = param(3, "seeds per method (seed, seed+1, ...)", min=1)
    num_envs: int = param(16, "parallel environments N", min=1)
    num_steps: int = param(128, "rollout length T per update", min=2)
    total_steps: int = param(409600, "agent steps per run (all envs together, excluding the random walk)", min=1)
    vector_mode: str = param("sync", "gymnasium vector env: one process or a subprocess per env", choices=("sync", "async"))
    hidden: int = param(64, "policy MLP width (gridworld)", min=1)
    rnd_hidden: int = param(128, "RND network width (gridworld)", min=1)
    lr: float = param(1e-3, "Adam learning rate", min=0.0)
    anneal_lr: bool = param(False, "decay the learning rate linearly to 0")
    gamma_ext: float = param(0.999, "extrinsic discount gamma_E", min=0.0, max=1.0)
    gamma_int: float = param(0.99, "intrinsic discount gamma_I", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    epochs: int = param(4, "PPO epochs per update", min=1)
    minibatches: int = param(4, "minibatches per epoch", min=1)
    clip_coef: float = param(0.2, "PPO clip range epsilon", min=0.0)
    ent_coef: float = param(0.01, "entropy bonus coefficient", min=0.0)
    vf_coef: float = param(0.5, "value loss coefficient", min=0.0)
    max_grad_norm: float = param(0.5, "global gradient-norm clip", min=0.0)
    clip_value_loss: bool = param(True, "clip the value loss like the policy ratio")
    ext_coef: float = param(2.0, "weight of the extrinsic advantage", min=0.0)
    int_coef: float = param(1.0, "weight of the intrinsic advantage", min=0.0)
    update_proportion: float = param(0.25, "fraction of each batch the RND predictor trains on", min=0.0, max=1.0)
    random_walk_steps: int = param(128, "random-agent steps per env before training, for every method "
                                   "(RND initialises its observation statistics from them)", min=0)
    clip_ext_reward: bool = param(False, "clip extrinsic rewards to [-1, 1] (Atari)")
    n_maps: int = param(4, "snapshots of the intrinsic-reward map per RND run (rooms task)", min=0)
    checkpoint_every: int = param(0, "save the training state every this many updates (0: never)", min=0)
    checkpoint_dir: str = param("", "where checkpoints live; a run finding its checkpoint there resumes "
                                "('' = <run folder>/checkpoints)")
    progress_every_s: float = param(15.0, "seconds between progress lines in headless runs (0: no progress)", min=0.0)
    probe_montezuma_steps: int = param(0, "steps of a Montezuma steps/s probe with the paper's nets (0: skip)", min=0)

    PROFILES = {
        "smoke": dict(n_seeds=2, num_envs=8, num_steps=64, total_steps=2048, max_episode_steps=50,
                      random_walk_steps=16, n_maps=2, progress_every_s=0.0, probe_montezuma_steps=0),
        "book": dict(probe_montezuma_steps=64),
        "paper": dict(env="ALE/MontezumaRevenge-v5", methods=("ppo", "rnd"), n_seeds=PAPER_MIN_SEEDS,
                      num_envs=128, num_steps=128, total_steps=30_000 * 128 * 128, vector_mode="async", lr=1e-4,
                      clip_coef=0.1, ent_coef=1e-3, vf_coef=1.0, clip_value_loss=False, gamma_ext=0.999,
                      gamma_int=0.99, update_proportion=0.25, random_walk_steps=50 * 128,
                      clip_ext_reward=True, n_maps=0, checkpoint_every=100, progress_every_s=60.0),
    }

    def check(self) -> None:
        """Cross-field rules: minibatches divide a rollout, at least one rollout, no repeated method, the
        environments split evenly over the data-parallel processes."""
        if (self.num_envs * self.num_steps) % self.minibatches:
            raise ConfigError("num_envs * num_steps must be divisible by minibatches")
        if self.total_steps < self.num_envs * self.num_steps:
            raise ConfigError("total_steps must cover at least one rollout (num_envs * num_steps)")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods must not repeat")
        self.check_data_parallel(env_counts=(self.num_envs,), checkpoint_dir=self.checkpoint_dir)

    @property
    def num_updates(self) -> int:
        """PPO updates per run: total_steps // (num_envs * num_steps)."""
        return self.total_steps // (self.num_envs * self.num_steps)

    @property
    def is_atari(self) -> bool:
        """True for an ALE task (the paper profile)."""
        return self.env.startswith("ALE/")
