"""The affine edit map H and the four ways to fit it (tensor maths, no files, no models).

H(z)(p) = A z(p) + b(p) + U (V^T vec z)(p) on codes (n, q, h, w); every fitting function takes
the two sides' codes (negatives (n_s, q, h, w), positives (n_t, q, h, w), float32) and returns
an ``AffineFit``. ``lrgmm.editing.attribute_edit`` explains the methods and their deviations
from the paper, and chooses among them (``AttributeEdit.fit_codes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EditError, OptionalDependencyError


@dataclass
class AffineFit:
    """A fitted H: linear A (q, q) float64, bias b (q, h, w) float32, left U / right V (d0, r)
    float32 or None, diagnostics ``info`` and per-epoch ``history`` (Wasserstein only)."""

    linear: torch.Tensor
    bias: torch.Tensor
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def require_geomloss():
    """GeomLoss's ``SamplesLoss``, or a clear error naming the extra to install."""
    try:
        from geomloss import SamplesLoss
    except ImportError:
        raise OptionalDependencyError(
            "the Wasserstein edit needs GeomLoss: pip install 'lrgmm[edit]' (or pip install --no-deps geomloss)"
        ) from None
    return SamplesLoss


# ----------------------------------------------------------------------------- the affine map
def apply_affine(
    codes: torch.Tensor,
    alpha: float,
    linear: torch.Tensor,
    bias: torch.Tensor,
    left: torch.Tensor | None = None,
    right: torch.Tensor | None = None,
) -> torch.Tensor:
    """z' = z + alpha H(z), H(z)(p) = A z(p) + b(p) + U (V^T vec z)(p)  (paper eq. 1).

    codes (n, q, h, w); linear A (q, q); bias b (q, h, w); left U, right V (d0, r) or None.
    Differentiable in every argument; all samples and positions at once."""
    return codes + alpha * affine_direction(codes, linear, bias, left, right)


def affine_direction(codes, linear, bias, left=None, right=None) -> torch.Tensor:
    """H(z) of ``apply_affine`` (n, q, h, w)."""
    dtype = codes.dtype
    out = torch.einsum("ij,njhw->nihw", linear.to(dtype), codes) + bias.to(dtype)
    if left is not None and right is not None and left.shape[1] > 0:
        n = codes.shape[0]
        out = out + ((codes.reshape(n, -1) @ right.to(dtype)) @ left.to(dtype).T).reshape(codes.shape)
    return out


def gaussian_ot_matrix(cov_source: torch.Tensor, cov_target: torch.Tensor) -> torch.Tensor:
    """A = S_s^-1/2 (S_s^1/2 S_t S_s^1/2)^1/2 S_s^-1/2 in float64: the symmetric positive map with
    A S_s A = S_t, the OT map between N(m_s, S_s) and N(m_t, S_t) being m_t + A (z - m_s)."""
    s = cov_source.to(torch.float64)
    t = cov_target.to(torch.float64)
    ev, V = torch.linalg.eigh((s + s.T) / 2)
    floor = max(float(ev.max()) * 1e-12, 1e-300)
    ev = ev.clamp_min(floor)
    s_half = (V * ev.sqrt()) @ V.T
    s_ihalf = (V / ev.sqrt()) @ V.T
    m = s_half @ t @ s_half
    ew, W = torch.linalg.eigh((m + m.T) / 2)
    m_half = (W * ew.clamp_min(0).sqrt()) @ W.T
    a = s_ihalf @ m_half @ s_ihalf
    return (a + a.T) / 2


def _pixel_gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean field (q, h, w) and the channel covariance (q, q) pooled over positions, float64."""
    x = codes.to(torch.float64)
    n, q, h, w = x.shape
    mean = x.mean(0)
    r = (x - mean).permute(0, 2, 3, 1).reshape(-1, q)
    cov = r.T @ r / max((n - 1) * h * w, 1)
    return mean, cov


# ----------------------------------------------------------------------------- latent classifiers
def fit_softmax(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int = 100,
                sample_weight: torch.Tensor | None = None, tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS, float64: the (``sample_weight``-weighted) mean
    cross-entropy + l2 ||W||^2. x (n, d), y (n,) int64 -> W (d, C), b (C,).

    The minimiser lies in the span of the samples (representer theorem), so with n < d it is
    solved for W = x^T beta on the n x n Gram matrix: the same optimum, n/d of the work."""
    x = x.to(torch.float64)
    n, d = x.shape
    weight = None if sample_weight is None else sample_weight.to(torch.float64) / sample_weight.sum()
    dual = n < d
    gram = x @ x.T if dual else None
    W = torch.zeros(n if dual else d, n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        kb = gram @ W if dual else None
        logits = (kb if dual else x @ W) + b
        if weight is None:
            loss = torch.nn.functional.cross_entropy(logits, y)
        else:
            loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * weight).sum()
        loss = loss + l2 * ((W * kb).sum() if dual else (W * W).sum())
        loss.backward()
        return loss

    opt.step(closure)
    weights = x.T @ W.detach() if dual else W.detach()
    return weights, b.detach()


@dataclass
class _Preserver:
    """F of eq. 5: per other attribute, softmax probabilities scaled by sqrt(1 - |corr|)."""

    weights: torch.Tensor  # (d0, C_total) float32
    biases: torch.Tensor  # (C_total,)
    scales: torch.Tensor  # (C_total,) sqrt(1 - |corr|)
    groups: list[tuple[str, list[str]]]  # (attribute, categories) in column order
    train_accuracy: dict = field(default_factory=dict)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        logits = codes.reshape(codes.shape[0], -1) @ self.weights + self.biases
        out, start = [], 0
        for _, cats in self.groups:
            out.append(torch.softmax(logits[:, start : start + len(cats)], dim=1))
            start += len(cats)
        return torch.cat(out, 1) * self.scales


def _fit_preserver(codes: torch.Tensor, target: np.ndarray, others: dict[str, list], l2: float) -> _Preserver | None:
    """Train F on the labelled codes; None when no other attribute has two categories."""
    flat = codes.reshape(codes.shape[0], -1)
    ws, bs, scales, groups, acc = [], [], [], [], {}
    t = target.astype(np.float64)
    for name, labels in others.items():
        lab = np.array([v if v is not None else "" for v in labels], dtype=object)
        known = lab != ""
        cats = sorted(set(lab[known].tolist()))
        if len(cats) < 2 or known.sum() < 4:
            continue
        y = torch.tensor([cats.index(v) for v in lab[known]], dtype=torch.long)
        W, b = fit_softmax(flat[torch.from_numpy(known)], y, len(cats), l2)
        pred = (flat[torch.from_numpy(known)].to(torch.float64) @ W + b).argmax(1)
        acc[name] = round(float((pred == y).double().mean()), 4)
        for c in cats:
            ind = (lab[known] == c).astype(np.float64)
            tt = t[known]
            corr = 0.0
            if ind.std() > 0 and tt.std() > 0:
                corr = float(np.corrcoef(ind, tt)[0, 1])
            scales.append(math.sqrt(max(0.0, 1.0 - abs(corr))))
        ws.append(W.to(torch.float32))
        bs.append(b.to(torch.float32))
        groups.append((name, cats))
    if not groups:
        return None
    return _Preserver(torch.cat(ws, 1), torch.cat(bs), torch.tensor(scales, dtype=torch.float32), groups, acc)


# ----------------------------------------------------------------------------- the four methods
def fit_mean_difference(neg: torch.Tensor, pos: torch.Tensor) -> AffineFit:
    """H(z) = m_t - m_s: one fixed direction (A = 0)."""
    q = neg.shape[1]
    m_s, m_t = neg.to(torch.float64).mean(0), pos.to(torch.float64).mean(0)
    return AffineFit(torch.zeros(q, q, dtype=torch.float64), (m_t - m_s).to(torch.float32))


def fit_classifier(neg: torch.Tensor, pos: torch.Tensor, l2: float) -> AffineFit:
    """H(z) = <m_t - m_s, w> w with w the unit normal of an L2-regularised logistic regression
    between the sides: alpha = 1 moves the negatives' mean onto the positives' along w."""
    q, h, w_ = neg.shape[1:]
    x = torch.cat([neg, pos]).reshape(-1, q * h * w_)
    y = torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]).long()
    W, b = fit_softmax(x, y, 2, l2)
    normal = W[:, 1] - W[:, 0]
    normal = normal / normal.norm()
    m_s, m_t = neg.to(torch.float64).mean(0), pos.to(torch.float64).mean(0)
    step = float((m_t - m_s).reshape(-1) @ normal)
    acc = float(((x.to(torch.float64) @ W + b).argmax(1) == y).double().mean())
    return AffineFit(torch.zeros(q, q, dtype=torch.float64), (step * normal).reshape(q, h, w_).to(torch.float32),
                     info={"classifier_train_accuracy": round(acc, 4), "classifier_step": round(step, 4)})


def fit_gaussian_ot(neg: torch.Tensor, pos: torch.Tensor) -> AffineFit:
    """The OT map between per-pixel Gaussians with pooled channel covariances:
    A = A_ot - I, b(p) = m_t(p) - A_ot m_s(p)."""
    q = neg.shape[1]
    (ms, cs), (mt, ct) = _pixel_gaussian(neg), _pixel_gaussian(pos)
    a = gaussian_ot_matrix(cs, ct)
    return AffineFit(a - torch.eye(q, dtype=torch.float64), (mt - torch.einsum("ij,jhw->ihw", a, ms)).to(torch.float32))


def fit_wasserstein(
    neg: torch.Tensor,
    pos: torch.Tensor,
    others: dict,
    generator: torch.Generator,
    *,
    cost: str = "joint",
    rank: int = 0,
    preservation: float = 1.0,
    blur: float | None = None,
    preservation_blur: float = 0.05,
    learning_rate: float = 1e-2,
    max_epochs: int = 200,
    patience: int = 20,
    validation_fraction: float = 0.2,
    scaling: float = 0.8,
    classifier_l2: float = 1e-3,
    progress: bool = True,
) -> AffineFit:
    """The paper's LW: A, b (and U, V) minimise L_edit + lambda L_pres (eq. 4, 5) with Adam and
    early stopping on held-out codes; ``others`` are the attributes L_pres preserves
    ({attribute: labels of the n_s + n_t codes, negatives first})."""
    SamplesLoss = require_geomloss()
    gen = generator
    history: list = []
    q, h, w = neg.shape[1:]
    d0 = q * h * w
    # Held-out codes for early stopping, per side.
    def split(x):
        perm = torch.randperm(x.shape[0], generator=gen)
        n_val = max(2, round(validation_fraction * x.shape[0]))
        return perm[n_val:], perm[:n_val]

    tr_s, va_s = split(neg)
    tr_t, va_t = split(pos)
    if cost not in ("joint", "pixels"):
        raise EditError(f"cost must be 'joint' or 'pixels', got {cost!r}")
    pixels = cost == "pixels"

    def points(x):  # (n, q, h, w) -> (n, d0) or, per position, (h w, n, q)
        return x.permute(2, 3, 0, 1).reshape(h * w, x.shape[0], q).contiguous() if pixels else x.reshape(x.shape[0], -1)

    if blur is None:
        sub = torch.cat([neg, pos])
        pick = torch.randperm(sub.shape[0], generator=gen)[:256]
        pts = points(sub[pick])
        dist = torch.cdist(pts, pts)
        upper = torch.triu(torch.ones(len(pick), len(pick), dtype=torch.bool), 1)
        blur = 1.0 * float((dist[..., upper] if pixels else dist[upper]).median())
    loss_edit = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized")
    loss_pres = SamplesLoss("sinkhorn", p=2, blur=preservation_blur, scaling=scaling, debias=True, backend="tensorized")

    preserver = None
    if preservation > 0 and others:
        target = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
        train_idx = np.concatenate([tr_s.numpy(), len(neg) + tr_t.numpy()])
        allc = torch.cat([neg, pos])
        preserver = _fit_preserver(
            allc[torch.from_numpy(train_idx)], target[train_idx],
            {a: [v[i] for i in train_idx] for a, v in others.items()}, classifier_l2,
        )
    A = torch.zeros(q, q, requires_grad=True)
    b = torch.zeros(q, h, w, requires_grad=True)
    params = [A, b]
    U = V = None
    if rank > 0:
        U = torch.zeros(d0, rank, requires_grad=True)
        V = (torch.randn(d0, rank, generator=gen) / math.sqrt(d0)).requires_grad_(True)
        params += [U, V]
    opt = torch.optim.Adam(params, lr=learning_rate)

    def total(src, tgt):
        edited = apply_affine(src, 1.0, A, b, U, V)
        le = loss_edit(points(edited), points(tgt))
        if pixels:
            le = le.sum()
        lp = torch.zeros(())
        if preserver is not None:
            lp = loss_pres(preserver.features(edited), preserver.features(src))
        return le + preservation * lp, le, lp

    xs, xt = neg[tr_s], pos[tr_t]
    vs, vt = neg[va_s], pos[va_t]
    batch = min(len(xs), len(xt))
    best, best_epoch, best_state = math.inf, -1, None
    bar = tqdm(range(max_epochs), desc=f"wasserstein edit (batch {batch})", unit="epoch", disable=not progress)
    for epoch in bar:
        ps = torch.randperm(len(xs), generator=gen)
        pt = torch.randperm(len(xt), generator=gen)
        big_is_src = len(xs) >= len(xt)
        n_big = len(xs) if big_is_src else len(xt)
        starts = [s for s in range(0, n_big, batch) if min(batch, n_big - s) >= max(1, batch // 2)]
        train_losses = []
        for s in starts:
            if big_is_src:
                src, tgt = xs[ps[s : s + batch]], xt[pt]
            else:
                src, tgt = xs[ps], xt[pt[s : s + batch]]
            loss, _, _ = total(src, tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_losses.append(float(loss.detach()))
        with torch.no_grad():
            val, val_edit, val_pres = (float(v) for v in total(vs, vt))
        history.append(
            {"epoch": epoch, "train": float(np.mean(train_losses)), "validation": val,
             "validation_edit": val_edit, "validation_preservation": val_pres}
        )
        if val < best - 1e-6 * abs(best if math.isfinite(best) else 1.0):
            best, best_epoch = val, epoch
            best_state = [p.detach().clone() for p in params]
        elif epoch - best_epoch >= patience:
            break
        bar.set_postfix(val=f"{val:.2f}", best=f"{best:.2f}")
    bar.close()
    left = right = None
    if rank > 0:
        left, right = best_state[2].to(torch.float32), best_state[3].to(torch.float32)
    info = dict(
        blur=round(blur, 6),
        epsilon=round(blur**2, 6),
        batch_size=batch,
        epochs=len(history),
        best_epoch=best_epoch,
        best_validation_loss=best,
        initial_validation_loss=history[0]["validation"] if history else None,
        n_train=[len(xs), len(xt)],
        n_validation=[len(vs), len(vt)],
        preserved_attributes={n: c for n, c in preserver.groups} if preserver else {},
        preservation_weights=[round(float(s) ** 2, 4) for s in preserver.scales] if preserver else [],
        latent_classifier_train_accuracy=preserver.train_accuracy if preserver else {},
    )
    return AffineFit(best_state[0].to(torch.float64), best_state[1].to(torch.float32), left, right, info, history)
