"""Decoder-based generative models trained three ways, and the kernel density (Parzen) estimator.

One decoder architecture ``z -> x`` (the generative half of :class:`repro.vae.IWAE`
with a spherical-Gaussian observation model) trained as

* a **VAE**: maximise the ELBO with the Gaussian observation model of fixed
  variance ``sigma2`` (eq. decoders-vae);
* a **GAN**: the non-saturating loss against an MLP discriminator
  (eq. decoders-gan);
* a **GMMN**: minimise the maximum mean discrepancy between a batch of data
  and a batch of samples, with a mixture of RBF kernels (eq. decoders-mmd);

all M models (methods × seeds) in one :class:`~repro.vae.IWAE` ensemble, so
one batched call trains every model each step (GAN and GMMN models ignore
their encoder).  Samples of GAN/GMMN are the decoder means
``sigmoid(decoder(z))``; for likelihoods every model gets the Gaussian
observation model, with ``sigma2`` chosen per model on validation data
(:func:`choose_sigma2`), as the paper does for models that have none.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .progress import Progress
from .seed import generator
from .vae import IWAE, Architecture, EnsembleMLP

METHODS = ("vae", "gan", "gmmn")


def dequantise(x: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intensities on ``levels`` equally spaced values in [0, 1] -> continuous ``(v + u) / levels``, u ~ U[0, 1).

    8x8 digits: ``levels = 17`` (pixels 0..16, the fact sheet's (x + u)/17);
    MNIST: ``levels = 256``.  Gives a density on [0, 1)^D whose likelihood is
    comparable across models.
    """
    v = torch.round(x * (levels - 1))
    if bool(((v < 0) | (v > levels - 1)).any()):
        raise ValueError("intensities must lie in [0, 1]")
    return (v + torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)) / levels


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """Biased MMD² between sample sets x [M, N, D] and y [M, N', D] with a sum of RBF kernels: [M].

    k(a, b) = sum_s exp(-|a - b|² / (2 s²))  (eq. decoders-mmd)
    """
    xy = torch.cat([x, y], 1)
    d2 = torch.cdist(xy, xy).square()                              # [M, N+N', N+N']
    k = sum(torch.exp(-d2 / (2.0 * s * s)) for s in bandwidths)
    n = x.shape[1]
    return k[:, :n, :n].mean((1, 2)) + k[:, n:, n:].mean((1, 2)) - 2.0 * k[:, :n, n:].mean((1, 2))


@dataclass(frozen=True)
class DecoderTraining:
    """Settings shared by the three methods (one ensemble, one schedule)."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.5                  # Adam beta1 = 0.5 keeps the GAN stable; harmless for the others
    train_sigma2: float = 0.02          # the VAE's fixed observation variance during training
    disc_hidden: int = 128
    mmd_bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    log_every: int = 100


@dataclass
class DecoderHistory:
    """Per logged step: the mean loss of each model [steps, M] (the VAE's is −ELBO per example)."""

    step: list[int] = field(default_factory=list)
    loss: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0


def prior_samples(model: IWAE, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws of z ~ N(0, I) for every model of a one-latent-layer ensemble: [M, n, d]."""
    return torch.randn(model.n_models, n, model.arch.latent[0], generator=generator,
                       device=model.log_sigma2.device)


class DecoderEnsemble:
    """M decoders (``methods[m]`` in METHODS) sharing one architecture, plus the GANs' discriminators."""

    def __init__(self, arch: Architecture, methods: Sequence[str], seeds: Sequence[int], x_mean: torch.Tensor,
                 settings: DecoderTraining = DecoderTraining(), device: torch.device | str = "cpu"):
        if arch.n_layers != 1:
            raise ValueError("decoder-based models here have one latent layer")
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; choose from {METHODS}")
        if len(methods) != len(seeds):
            raise ValueError("need one seed per model")
        self.arch, self.methods, self.settings = arch, tuple(methods), settings
        self.device = torch.device(device)
        self.model = IWAE(arch, len(methods), seeds=list(seeds), x_mean=x_mean, observation="gaussian",
                          sigma2=settings.train_sigma2).to(self.device)
        self.index = {m: torch.tensor([i for i, k in enumerate(methods) if k == m], device=self.device)
                      for m in METHODS}
        n_gan = len(self.index["gan"])
        self.disc = EnsembleMLP(max(n_gan, 1), arch.x_dim, settings.disc_hidden, 1)
        g = generator(int(seeds[0]) + 7919)          # the discriminators' init: N(0, 1/fan_in), biases 0
        with torch.no_grad():
            for lin in self.disc.layers:
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(lin.weight.shape[1]))
                lin.bias.zero_()
        self.disc.to(self.device)

    @property
    def n_models(self) -> int:
        return len(self.methods)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples (decoder means) of every model: [M, n, D]."""
        return self.model.decode_mean(prior_samples(self.model, n, generator))

    def losses(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-model generator losses [M] and the discriminators' loss (None without GANs) for batches x [M, N, D]."""
        M, N, _ = x.shape
        loss = torch.zeros(M, device=self.device)
        iv, ig, im = self.index["vae"], self.index["gan"], self.index["gmmn"]
        if len(iv):   # (decoders-vae): -ELBO with one reparameterised sample
            lw = self.model.log_weights(x, 1, gen)[:, 0]                         # [M, N]
            loss = loss.index_add(0, iv, -lw[iv].mean(1))
        d_loss = None
        if len(ig) or len(im):
            fake = self.sample(N, gen)                                           # [M, N, D]
            if len(ig):   # (decoders-gan): non-saturating generator loss; D on real vs detached fake
                real_logit = self.disc(x[ig])[..., 0]
                fake_logit = self.disc(fake[ig].detach())[..., 0]
                d_loss = (nn.functional.softplus(-real_logit) + nn.functional.softplus(fake_logit)).mean(1).sum()
                g_logit = self.disc(fake[ig])[..., 0]
                loss = loss.index_add(0, ig, nn.functional.softplus(-g_logit).mean(1))
            if len(im):   # (decoders-mmd)
                loss = loss.index_add(0, im, mmd2(fake[im], x[im], self.settings.mmd_bandwidths))
        return loss, d_loss

    def train(self, data: torch.Tensor, seed: int = 0, label: str = "decoders") -> DecoderHistory:
        """Train every model for ``settings.steps`` steps on ``data`` [N, D]; each model draws its own minibatches."""
        s = self.settings
        data = data.to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        opt_g = torch.optim.Adam(self.model.parameters(), lr=s.lr, betas=(s.beta1, 0.999))
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=s.lr, betas=(s.beta1, 0.999))
        hist, t0 = DecoderHistory(), time.perf_counter()
        running = torch.zeros(self.n_models, device=self.device)
        with Progress(s.steps, label) as bar:
            for step in range(1, s.steps + 1):
                idx = torch.randint(len(data), (self.n_models, s.batch_size), generator=gen, device=self.device)
                x = data[idx]                                                    # [M, B, D]
                loss, d_loss = self.losses(x, gen)
                opt_g.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt_d.zero_grad(set_to_none=True)        # the generators' loss also reached D: not D's gradient
                if d_loss is not None:
                    d_loss.backward()                    # fake samples were detached: D's gradient only
                    opt_d.step()
                opt_g.step()                             # simultaneous updates of G and D
                running += loss.detach()
                if step % s.log_every == 0 or step == s.steps:
                    k = (step - 1) % s.log_every + 1
                    hist.step.append(step)
                    hist.loss.append((running / k).tolist())
                    running.zero_()
                    bar.update(step, loss=sum(hist.loss[-1]) / self.n_models)
        hist.seconds = time.perf_counter() - t0
        return hist


# ---------------------------------------------------------------------------
# Kernel density (Parzen window) estimator
# ---------------------------------------------------------------------------


def parzen_log_density(x: torch.Tensor, samples: torch.Tensor, bandwidth: float | torch.Tensor,
                       chunk: int = 256) -> torch.Tensor:
    """log (1/S) sum_s N(x; samples_s, h² I) per model and example: x [M, B, D], samples [M, S, D] -> [M, B].

    (decoders-kde).  ``bandwidth`` a float or [M] (one per model).  Computed in
    chunks of ``chunk`` examples, so memory is O(M · chunk · S).
    """
    M, S, D = samples.shape
    h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device).reshape(-1, 1, 1).expand(M, 1, 1)
    out = []
    for i in range(0, x.shape[1], chunk):
        d2 = torch.cdist(x[:, i:i + chunk], samples).square()                    # [M, b, S]
        lk = -0.5 * d2 / h**2 - D * torch.log(h) - 0.5 * D * math.log(2 * math.pi)
        out.append(torch.logsumexp(lk, -1) - math.log(S))
    return torch.cat(out, 1)


def choose_bandwidth(valid: torch.Tensor, samples: torch.Tensor, grid: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model, the bandwidth of ``grid`` with the highest mean validation log-density: ([M], scores [G, M])."""
    scores = torch.stack([parzen_log_density(valid, samples, h).mean(1) for h in grid])   # [G, M]
    best = scores.argmax(0)
    return torch.as_tensor(grid, dtype=valid.dtype, device=valid.device)[best], scores
