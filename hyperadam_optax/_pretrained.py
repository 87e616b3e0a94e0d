"""Meta-parameters shipped inside the package (``hyperadam_optax/pretrained/``)."""

from __future__ import annotations

from importlib import resources


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Raised when a learned optimizer has no pretrained meta-parameters in this package."""


def pretrained_path(name: str):
    """The packaged file ``pretrained/{name}.npz`` (a ``Traversable``)."""
    return resources.files("hyperadam_optax") / "pretrained" / f"{name}.npz"


def load_pretrained(name: str):
    """Load the shipped meta-parameters of optimizer ``name`` (no download, no pickle)."""
    from hyperadam_optax._serialization import load_meta_params

    path = pretrained_path(name)
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(
            f"this version of hyperadam_optax ships no pretrained {name!r} meta-parameters "
            f"({path} is missing). Pass meta_params explicitly, e.g. "
            "init_meta_params(jax.random.key(0), init='adam') for the Adam warm start, or "
            "load_meta_params(path) for weights you meta-trained."
        )
    with resources.as_file(path) as p:
        return load_meta_params(p)
