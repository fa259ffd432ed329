"""The attacks binprune trains and evaluates with, and the TRADES loss.

Attacks work in pixel space: inputs in [0, 1], normalization inside the model.

The PGD family (:class:`LinfPGD`, :class:`L2PGD`, :class:`TradesPGD`, :class:`FastFGSM`) is
binprune's own, so that installing binprune does not install torchattacks (whose 3.5.1 release
pins ``requests ~= 2.25.1`` and ships a stale copy of robustbench that overwrites the user's).
They follow torchattacks' definitions step for step and draw the same random numbers in the
same order, so results equal those of torchattacks' ``PGD``, ``PGDL2``, ``TPGD`` and ``FFGSM``
(``tests/test_train.py`` checks the equality where torchattacks is installed). Their interface is
torchattacks' ``Attack`` interface (``set_device``, ``set_model_training_mode``, ``get_logits``,
``attack(images, labels)``), so a torchattacks attack instance can be passed wherever binprune
takes one.

Batch norm during attack generation (``bn_mode``):

``"train"`` (default for training)
    the model is in train mode while the attack runs, so batch norms normalize with the batch's
    statistics, exactly as in the training step that follows, but their running statistics are
    frozen (:func:`frozen_batchnorm_stats`), so the attack's 10+ forward passes do not count as
    training data. Dropout is off during the attack.
``"eval"``
    the attacks' default (as torchattacks'): the model is in eval mode (running statistics) during the attack.

A torchattacks APGD, FAB or Square passed in re-seeds the global RNG on every call; :func:`run_attack`
forks the RNG around every attack call, so training keeps its own random stream.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import crop_flip, uncrop_flip

__all__ = [
    "TRAIN_ATTACKS", "BN_MODES", "make_attack", "run_attack", "frozen_batchnorm_stats", "trades_loss",
    "CarriedFGSM", "default_alpha", "CARRIED_ALPHA_FACTOR", "attack_bn_mode", "Attack", "LinfPGD", "L2PGD",
    "TradesPGD", "FastFGSM", "is_attack",
]

from .config import ATTACK_BN_MODES as BN_MODES, TRAIN_ATTACKS  # noqa: E402  (names defined once)


#: step of the carried fast attack, in units of eps: the reference's 4/255 at eps 8/255
CARRIED_ALPHA_FACTOR = 0.5


def default_alpha(attack: str, eps: float, steps: int, carry: bool = False) -> float:
    """Step size: 2.5 * eps / steps for iterative attacks (Madry et al.), 1.25 * eps for the
    single-step fast attack (Wong et al., 2020), 0.5 * eps for the carried fast attack (Liu et
    al., 2022: 4/255 at 8/255)."""
    if attack == "fast":
        return CARRIED_ALPHA_FACTOR * eps if carry else 1.25 * eps
    return 2.5 * eps / max(steps, 1)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Batch norms keep using batch statistics in train mode but do not update running ones."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class Attack:
    """Base of binprune's attacks: sets the model's mode while the attack runs, then restores it.

    Subclasses implement ``forward(images, labels, *args)``. By default the model is in eval mode
    during the attack; :meth:`set_model_training_mode` selects train mode, optionally keeping batch
    norms or dropout in eval mode (chosen by class name, as torchattacks does).
    """

    def __init__(self, name: str, model: nn.Module):
        self.attack = name
        self.model = model
        param = next(iter(model.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self._model_training = False
        self._batchnorm_training = False
        self._dropout_training = False

    def set_device(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def set_model_training_mode(self, model_training: bool = False, batchnorm_training: bool = False,
                                dropout_training: bool = False) -> None:
        self._model_training = model_training
        self._batchnorm_training = batchnorm_training
        self._dropout_training = dropout_training

    def get_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _copies(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Detached copies on the attack's device: the attack never writes into the caller's tensors."""
        return tuple(t.clone().detach().to(self.device) for t in tensors)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        raise NotImplementedError

    def _set_mode(self) -> None:
        if not self._model_training:
            self.model.eval()
            return
        self.model.train()
        for m in self.model.modules():
            kind = type(m).__name__
            if ("BatchNorm" in kind and not self._batchnorm_training) or ("Dropout" in kind and not self._dropout_training):
                m.eval()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        was_training = self.model.training
        self._set_mode()
        try:
            return self.forward(images, labels, *args)
        finally:
            self.model.train(was_training)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(self).items()
                             if k in ("eps", "alpha", "steps", "random_start"))
        return f"{type(self).__name__}({settings})"


def is_attack(obj: object) -> bool:
    """Whether ``obj`` is an attack instance: binprune's, or one with torchattacks' interface."""
    return isinstance(obj, Attack) or (callable(obj) and hasattr(obj, "set_device")
                                       and hasattr(obj, "set_model_training_mode") and hasattr(obj, "model"))


def _linf_step(images: torch.Tensor, adv: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """One signed-gradient step, projected on the L-inf ball around ``images`` and on [0, 1]."""
    delta = torch.clamp(adv.detach() + alpha * grad.sign() - images, min=-eps, max=eps)
    return torch.clamp(images + delta, min=0, max=1).detach()


class LinfPGD(Attack):
    r"""PGD under the L-inf distance (Madry et al., 2018): ``steps`` signed-gradient steps of
    cross-entropy, each projected on the ``eps`` ball and on [0, 1].

    Distance Measure : Linf

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 2/255)
        steps (int): number of steps. (Default: 10)
        random_start (bool): start from a uniform point of the ball. (Default: True)

    Examples::
        >>> attack = LinfPGD(model, eps=8/255, alpha=2/255, steps=10)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 random_start: bool = True):
        super().__init__("PGD", model)
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        images, labels = self._copies(images, labels)
        adv = images.clone().detach()
        if self.random_start:
            adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-self.eps, self.eps), min=0, max=1).detach()
        for _ in range(self.steps):
            adv.requires_grad = True
            grad = torch.autograd.grad(F.cross_entropy(self.get_logits(adv), labels), adv)[0]
            adv = _linf_step(images, adv, grad, self.alpha, self.eps)
        return adv


class L2PGD(Attack):
    r"""PGD under the L2 distance: normalized-gradient steps of cross-entropy, each projected on
    the ``eps`` ball and on [0, 1]; the random start is uniform in radius along a Gaussian direction.

    Distance Measure : L2

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        eps (float): maximum perturbation. (Default: 1.0)
        alpha (float): step size. (Default: 0.2)
        steps (int): number of steps. (Default: 10)
        random_start (bool): start from a random point of the ball. (Default: True)

    Examples::
        >>> attack = L2PGD(model, eps=0.5, alpha=0.1, steps=10)
        >>> adv_images = attack(images, labels)
    """

    _TINY = 1e-10  # keeps the gradient's normalization finite at a zero gradient

    def __init__(self, model: nn.Module, eps: float = 1.0, alpha: float = 0.2, steps: int = 10,
                 random_start: bool = True):
        super().__init__("PGDL2", model)
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        images, labels = self._copies(images, labels)
        n = len(images)
        adv = images.clone().detach()
        if self.random_start:
            delta = torch.empty_like(adv).normal_()
            norms = delta.view(n, -1).norm(p=2, dim=1).view(n, 1, 1, 1)
            radius = torch.zeros_like(norms).uniform_(0, 1)
            delta *= radius / norms * self.eps
            adv = torch.clamp(adv + delta, min=0, max=1).detach()
        for _ in range(self.steps):
            adv.requires_grad = True
            grad = torch.autograd.grad(F.cross_entropy(self.get_logits(adv), labels), adv)[0]
            grad = grad / (torch.norm(grad.view(n, -1), p=2, dim=1) + self._TINY).view(n, 1, 1, 1)
            delta = adv.detach() + self.alpha * grad - images
            factor = torch.min(self.eps / torch.norm(delta.view(n, -1), p=2, dim=1), torch.ones(n, device=delta.device))
            adv = torch.clamp(images + delta * factor.view(-1, 1, 1, 1), min=0, max=1).detach()
        return adv


class TradesPGD(Attack):
    r"""TRADES' inner maximization (Zhang et al., 2019): L-inf PGD on the KL divergence between the
    prediction on the clean input and on the perturbed one, from a small Gaussian start.

    Distance Measure : Linf

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 2/255)
        steps (int): number of steps. (Default: 10)

    Examples::
        >>> attack = TradesPGD(model, eps=8/255, alpha=2/255, steps=10)
        >>> adv_images = attack(images)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10):
        super().__init__("TPGD", model)
        self.eps, self.alpha, self.steps = eps, alpha, steps

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        (images,) = self._copies(images)
        target = F.softmax(self.get_logits(images).detach(), dim=1)
        adv = torch.clamp(images + 0.001 * torch.randn_like(images), min=0, max=1).detach()
        for _ in range(self.steps):
            adv.requires_grad = True
            loss = F.kl_div(F.log_softmax(self.get_logits(adv), dim=1), target, reduction="sum")
            grad = torch.autograd.grad(loss, adv)[0]
            adv = _linf_step(images, adv, grad, self.alpha, self.eps)
        return adv


class FastFGSM(Attack):
    r"""FGSM from a uniform random start ("fast is better than free", Wong et al., 2020): one
    signed-gradient step of ``alpha``, projected on the ``eps`` ball and on [0, 1].

    Distance Measure : Linf

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 10/255)

    Examples::
        >>> attack = FastFGSM(model, eps=8/255, alpha=10/255)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 10 / 255):
        super().__init__("FFGSM", model)
        self.eps, self.alpha = eps, alpha

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *args) -> torch.Tensor:
        images, labels = self._copies(images, labels)
        # A normal draw that the uniform one overwrites: the random stream of torchattacks' FFGSM,
        # so runs match those made with it.
        start = torch.randn_like(images).uniform_(-self.eps, self.eps)
        adv = torch.clamp(images + start, min=0, max=1).detach()
        adv.requires_grad = True
        grad = torch.autograd.grad(F.cross_entropy(self.get_logits(adv), labels), adv)[0]
        return _linf_step(images, adv, grad, self.alpha, self.eps)


class CarriedFGSM(Attack):
    r"""FGSM whose starting point is the perturbation this example received in the previous epoch.

    Distance Measure : Linf

    Each training example keeps its perturbation in a buffer (int8 codes of ``delta / eps``) and
    the next epoch starts one signed-gradient step from there instead of from a random point, so
    the perturbation accumulates strength across epochs at the cost of one step per batch (the
    "fast" variant of Liu et al., 2022: ``FGSM_RS`` in their ``code/util/attack.py``, step 4/255
    at eps 8/255). The buffer starts uniform in [-eps, eps].

    With crop-and-flip augmentation (``padding > 0``) the buffer lives in the frame of the padded
    original image, as the reference's does: each call reads the crop window of the batch's
    augmentation (flipped when the image was), and writes the new perturbation back into that
    window (un-flipped), leaving the rest of the padded frame as it was. So a pixel of the
    original image keeps its perturbation whatever crop and flip the next epoch draws.

    Arguments:
        model (nn.Module): model to attack.
        num_examples (int): size of the training set (buffer rows).
        example_shape (tuple): shape of one (un-augmented) input, ``(C, H, W)``.
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 0.5 * eps, the reference's 4/255 at 8/255)
        generator (torch.Generator): seeds the buffer's initial values.
        padding (int): padding of the crop augmentation (0: no augmentation; 4 for ``crop_flip``).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1] (augmented); labels: :math:`(N)`; indices:
          :math:`(N)` rows of the buffer; ``crops``: ``(offsets (N, 2), flips (N,))`` of the
          augmentation when ``padding > 0``. Output: adversarial images :math:`(N, C, H, W)`.

    Examples::
        >>> attack = CarriedFGSM(model, len(train_set), (1, 28, 28), eps=0.1)
        >>> adv_images = attack(images, labels, indices)
    """

    def __init__(self, model: nn.Module, num_examples: int, example_shape: tuple[int, ...], eps: float = 8 / 255,
                 alpha: float | None = None, generator: torch.Generator | None = None, padding: int = 0):
        super().__init__("CarriedFGSM", model)
        self.eps = eps
        self.alpha = CARRIED_ALPHA_FACTOR * eps if alpha is None else alpha
        if padding < 0 or (padding and len(example_shape) != 3):
            raise ValueError(f"padding must be >= 0 (and needs (C, H, W) examples), got {padding} for {example_shape}")
        self.padding = int(padding)
        shape = tuple(example_shape)
        if self.padding:
            c, h, w = shape
            shape = (c, h + 2 * self.padding, w + 2 * self.padding)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.codes = torch.randint(-127, 128, (num_examples, *shape), generator=gen, dtype=torch.int8)
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,  # type: ignore[override]
                indices: torch.Tensor | None = None,
                crops: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if labels is None or indices is None:
            raise ValueError("the carried fast attack needs the labels and the buffer rows (indices) of the batch")
        if (crops is None) != (self.padding == 0):
            raise ValueError("the carried fast attack needs the batch's crops (offsets, flips) exactly when it was "
                             f"built with padding > 0 (padding {self.padding}, crops {'given' if crops else 'missing'})")
        images, labels = self._copies(images, labels)
        rows = indices.cpu()
        stored = self.codes[rows]
        frame = crop_flip(stored, *crops, padded=True) if crops is not None else stored
        delta = frame.to(self.device, torch.float32) * (self.eps / 127.0)
        adv = torch.clamp(images + delta, 0, 1).detach().requires_grad_(True)
        loss = F.cross_entropy(self.get_logits(adv), labels)
        grad = torch.autograd.grad(loss, adv)[0]
        delta = torch.clamp(adv.detach() + self.alpha * grad.sign() - images, -self.eps, self.eps)
        adv = torch.clamp(images + delta, 0, 1).detach()
        codes = torch.round((adv - images) / self.eps * 127.0).clamp_(-127, 127).to(torch.int8).cpu()
        self.codes[rows] = uncrop_flip(codes, *crops, into=stored) if crops is not None else codes
        return adv


def make_attack(name: str, model: nn.Module, *, eps: float, alpha: float | None = None, steps: int = 10,
                bn_mode: str = "train", num_examples: int | None = None,
                example_shape: tuple[int, ...] | None = None, carry: bool = False,
                generator: torch.Generator | None = None, padding: int = 0) -> Attack | None:
    """Build the attack used to make training examples.

    ``"pgd"``: :class:`LinfPGD` (random start, ``steps`` steps of ``alpha``). ``"fast"``:
    :class:`FastFGSM` (step 1.25 eps), or :class:`CarriedFGSM` with ``carry``.
    ``"trades"``: :class:`TradesPGD`, which maximizes the KL divergence to the clean prediction. ``"none"``:
    standard (non-adversarial) training, returns ``None``.
    """
    if name not in TRAIN_ATTACKS:
        raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(TRAIN_ATTACKS)}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown batch-norm mode {bn_mode!r} for attacks: choose 'train' or 'eval'")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if name == "none":
        return None
    alpha = default_alpha(name, eps, steps, carry) if alpha is None else alpha
    if alpha <= 0 and eps > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if name == "pgd":
        attack: Attack = LinfPGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    elif name == "trades":
        attack = TradesPGD(model, eps=eps, alpha=alpha, steps=steps)
    elif carry:
        if num_examples is None or example_shape is None:
            raise ValueError("the carried fast attack needs num_examples and example_shape for its buffer")
        attack = CarriedFGSM(model, num_examples, tuple(example_shape), eps=eps, alpha=alpha, generator=generator,
                             padding=padding)
    else:
        attack = FastFGSM(model, eps=eps, alpha=alpha)
    configure_bn_mode(attack, bn_mode)
    return attack


def attack_bn_mode(attack: str, bn_mode: str | None) -> str:
    """The batch-norm mode of a training attack: ``bn_mode`` when given, else ``"eval"`` for
    TRADES (its reference implementations run the inner maximization with ``model.eval()``:
    Zhang et al.'s ``trades.py``, HYDRA's ``utils/adv.py``, Liu et al.'s ``code/util/attack.py``)
    and ``"train"`` otherwise."""
    if bn_mode is not None:
        return bn_mode
    return "eval" if attack == "trades" else "train"


def configure_bn_mode(attack: Attack, bn_mode: str) -> None:
    """Tell the attack which mode to put the model in while it runs (see module doc)."""
    if bn_mode == "train":
        attack.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=False)
    else:
        attack.set_model_training_mode(model_training=False)


def rng_devices(device: torch.device) -> list[int]:
    """CUDA device indices whose RNG ``torch.random.fork_rng`` must save (none on CPU)."""
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def run_attack(attack: Attack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               *args, bn_mode: str = "train") -> torch.Tensor:
    """Run ``attack`` with the global RNG forked (attacks that re-seed it cannot reset training's
    random stream) and, in ``"train"`` mode, with batch-norm running statistics frozen."""
    was_training = model.training
    with torch.random.fork_rng(devices=rng_devices(images.device)):
        stats = frozen_batchnorm_stats(model) if bn_mode == "train" and was_training else contextlib.nullcontext()
        with stats:
            adv = attack(images, labels, *args)
    model.train(was_training)
    return adv


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, labels: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    """TRADES (Zhang et al., 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, batch mean."""
    natural = F.cross_entropy(logits_clean, labels)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return natural + beta * robust
