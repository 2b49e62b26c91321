"""The meta-adaptation chapter's typed config, the paper's reference facts and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params meta_adaptation``
is instant.  The runs are built in :mod:`repro.chapters.meta_adaptation.experiments`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, ProfileConfig, param
from ...scorecard import CHECK, FINDING, Above, Claim, Greater, Holds, Within

# The paper's setup and numbers (fact sheet /work/shared/papers/meta_adaptation.md; Al-Shedivat et al.,
# ICLR 2018, arXiv 1710.03641)
PAPER = {"inner_steps": 3, "alpha_init": 1e-3, "meta_grad_clip": 0.1, "fade_episodes": 7, "leg_pairs": 15,
         "train_pairs": 12, "held_out_pairs": 3, "sumo_rounds": 100, "sumo_episodes_per_round": 3,
         "sumo_episode_steps": 500, "win": 2000, "loss": -2000, "draw": -1000,
         "win_rate_last25": {"Ant vs Ant": (44.0, 30.0, 24.9), "Bug vs Bug": (43.7, 21.2, 28.6)}}

Z = 2.0              # margin in standard errors
MIN_SEEDS = 3        # seeds for a finding at book
LATE = (6, 7)        # "the later episodes of the fade"
TRACKING_TOL = 0.25  # "tracking gains little": |tracking - none| within 25% of the oracle gap (fixed before the runs)
MIN_EVAL_SEQUENCES = 16

_loco = "nonstationary locomotion, held-out leg pairs (smoke/book profiles)"
_late = f"the mean return of episodes {LATE[0]}–{LATE[1]} of the fade on the held-out leg pairs"
_paired = f"paired per seed over ≥ {MIN_SEEDS} seeds, difference beyond {Z:g} s.e."

CLAIMS = (
    Claim("meta-beats-tracking", FINDING,
          f"Meta-learned adaptation beats tracking (continued fine-tuning) late in the fade: {_late}, "
          f"meta vs tracking; {_paired}",
          "meta-learned adaptation is much better than tracking in episodes 6–7 of the fade",
          Greater(f"return, episodes {LATE[0]}–{LATE[1]}", "meta", "tracking", z=Z, paired=True,
                  min_seeds=MIN_SEEDS),
          needs=_loco),
    Claim("meta-beats-none", FINDING,
          f"Meta-learned adaptation beats no adaptation late in the fade: {_late}, meta vs the baselines' "
          f"policy (PPO on the training tasks for as many arena-steps as pretraining and meta-training "
          f"together) played without adaptation; {_paired}",
          "meta-learned adaptation is much better than no adaptation in episodes 6–7 of the fade",
          Greater(f"return, episodes {LATE[0]}–{LATE[1]}", "meta", "no adaptation", z=Z, paired=True,
                  min_seeds=MIN_SEEDS),
          needs=_loco),
    Claim("adaptation-helps", FINDING,
          f"The meta-learner's advantage comes from adapting: {_late}, the meta-learned θ with its adaptation "
          f"steps vs the same θ played without them; {_paired}",
          "the meta-learner is worse than or on par with the baselines before it has adapted (episode 1) and much "
          "better in episodes 6–7",
          Greater(f"return, episodes {LATE[0]}–{LATE[1]}", "meta-learned θ adapted", "not adapted", z=Z,
                  paired=True, min_seeds=MIN_SEEDS),
          needs=_loco),
    Claim("tracking-little-gain", FINDING,
          f"Tracking gains little over no adaptation in the few-shot regime: per seed, ({_late}: tracking "
          f"− no adaptation) / the oracle gap; the mean over ≥ {MIN_SEEDS} seeds within ±{TRACKING_TOL:.0%} of 0, "
          f"including {Z:g} s.e.",
          "tracking does not beat no adaptation with few episodes per task",
          Within("(tracking − no adaptation) / oracle gap, episodes 6–7", 0.0, TRACKING_TOL, z=Z,
                 min_seeds=MIN_SEEDS),
          needs=_loco),
    Claim("oracle-gap", CHECK,
          f"The book task admits adaptation: on the fully faded held-out pairs, a policy fine-tuned on the "
          f"faded task (the oracle) returns more than the unadapted policy; per seed the gap averaged over "
          f"≥ {MIN_EVAL_SEQUENCES} evaluation sequences, the mean over seeds above 0 by more than {Z:g} s.e.",
          "—",
          Above("oracle gap (return, fully faded held-out pairs)", 0.0, z=Z, min_seeds=MIN_SEEDS),
          needs=_loco),
    Claim("sumo-meta-wins", FINDING,
          "In an iterated RoboSumo game against an opponent that keeps learning, the meta-learner wins more "
          "rounds over the last quarter of the rounds than the tracking agent; paired per seed, beyond "
          f"{Z:g} s.e.",
          "win rates over the last 25 of 100 rounds: Ant vs Ant 44.0% (meta) vs 30.0% (tracking)",
          Greater("win rate, last quarter of the rounds", "meta", "tracking", z=Z, paired=True,
                  min_seeds=MIN_SEEDS),
          needs="the paper profile (legged bodies, 100 rounds × 3 episodes; a GPU or many cores)"),
    Claim("legged-bodies", CHECK,
          "The paper profile's legged bodies (six legs for locomotion, Ant-like for RoboSumo) build as many "
          "arenas in one MuJoCo model and step with finite states",
          "—",
          Holds("every arena's state is finite after stepping"),
          needs="any profile (a short stepping probe)"),
)


@dataclass(frozen=True)
class MetaAdaptationConfig(ProfileConfig):
    """Nonstationary locomotion (meta vs tracking vs none), its oracle gap, and RoboSumo."""

    body: str = param("crawler", "locomotion body", choices=("crawler", "bug"))
    episode_steps: int = param(100, "agent steps per episode (0.1 s each for the crawler)", min=2)
    hidden: int = param(64, "policy width", min=4)
    # pretraining (the policy the baselines use, and the meta-learner's start)
    pretrain_iters: int = param(120, "PPO iterations on the training tasks (random pair, random episode)", min=1)
    pretrain_arenas: int = param(64, "arenas per PPO iteration", min=2)
    # meta-learning
    meta_iters: int = param(100, "meta-iterations (consecutive task pairs, PPO through the inner steps)", min=1)
    meta_tasks: int = param(8, "task pairs per meta-iteration (G)", min=1)
    meta_arenas: int = param(8, "arenas per task (M): the trajectories one adaptation sees", min=2)
    inner_steps: int = param(PAPER["inner_steps"], "policy-gradient steps of the adaptation", min=1)
    alpha_init: float = param(PAPER["alpha_init"], "initial per-tensor step size", min=0.0)
    meta_lr: float = param(3e-4, "Adam learning rate of theta", min=0.0)
    alpha_lr: float = param(3e-5, "Adam learning rate of the step sizes alpha", min=0.0)
    meta_grad_clip: float = param(PAPER["meta_grad_clip"], "meta-gradient values clipped to +-this", min=0.0)
    tracking_lr: float = param(3e-4, "tracking: Adam step size of continued fine-tuning", min=0.0)
    # evaluation
    eval_sequences: int = param(18, "fade sequences per held-out pair set (spread over the 3 pairs)", min=1)
    oracle_iters: int = param(40, "PPO iterations of the oracle on each fully faded held-out pair", min=1)
    # RoboSumo
    sumo_body: str = param("disc", "RoboSumo body", choices=("disc", "ant", "bug", "spider"))
    sumo_episode_steps: int = param(100, "agent steps per sumo episode (bout limit)", min=2)
    sumo_arenas: int = param(64, "rings stepped together (self-play and the game's bouts per episode)", min=2)
    sumo_selfplay_iters: int = param(120, "PPO self-play iterations per learning trajectory", min=1)
    sumo_snapshot_every: int = param(10, "self-play iterations between opponent snapshots", min=1)
    sumo_shaping: float = param(10.0, "multiplier of the approach and push shaping rewards", min=0.0)
    sumo_meta_tasks: int = param(8, "opponent pairs per sumo meta-iteration", min=1)
    sumo_meta_iters: int = param(30, "sumo meta-iterations", min=1)
    sumo_tracking_lr: float = param(1e-3, "tracking's SGD step size in the sumo game", min=0.0)
    sumo_rounds: int = param(12, "rounds of the iterated game (3 episodes each)", min=1)
    sumo_seeds: int = param(1, "seeds of the iterated game (the finding is scored with >= 3)", min=0)
    # checkpoints
    checkpoint_every: int = param(0, "save every training run's state every this many iterations (0: never)", min=0)
    checkpoint_dir: str = param("", "where checkpoints live; a run finding its checkpoint there resumes "
                                "('' = <run folder>/checkpoints)")
    # seeds and processes
    n_seeds: int = param(3, "seeds (seed, seed+1, ...)", min=1)
    workers: int = param(2, "processes the seeds are spread over (1: in the notebook's process)", min=1, max=64)

    PROFILES = {
        "smoke": dict(episode_steps=20, pretrain_iters=4, pretrain_arenas=16, meta_iters=3, meta_tasks=2,
                      meta_arenas=4, eval_sequences=3, oracle_iters=2, hidden=16, n_seeds=2,
                      sumo_episode_steps=20, sumo_arenas=8, sumo_selfplay_iters=4, sumo_snapshot_every=2,
                      sumo_meta_tasks=2, sumo_meta_iters=2, sumo_rounds=2),
        "book": dict(),
        "paper": dict(body="bug", episode_steps=500, hidden=64, pretrain_iters=2000, pretrain_arenas=128,
                      meta_iters=1000, meta_tasks=16, meta_arenas=16, eval_sequences=48, oracle_iters=300,
                      sumo_body="ant", sumo_episode_steps=PAPER["sumo_episode_steps"], sumo_arenas=128,
                      sumo_selfplay_iters=3000, sumo_snapshot_every=100, sumo_meta_iters=500, sumo_meta_tasks=16,
                      sumo_rounds=PAPER["sumo_rounds"], sumo_seeds=3, n_seeds=3, workers=1, checkpoint_every=20),
    }

    def check(self) -> None:
        if self.eval_sequences < 1:
            raise ConfigError("eval_sequences must be >= 1")
        if self.profile != "smoke" and self.eval_sequences < MIN_EVAL_SEQUENCES:
            raise ConfigError(f"the oracle gap needs >= {MIN_EVAL_SEQUENCES} evaluation sequences "
                              f"(eval_sequences={self.eval_sequences})")
