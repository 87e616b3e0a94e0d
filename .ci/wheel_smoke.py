"""What a user of the installed wheel needs, checked from outside the repository.

Run by .ci/check_package.sh in a fresh venv holding only the wheel and its dependencies:
the package imports from site-packages (not the checkout), every shipped weight file and card
loads, one update of each learned optimizer is finite, and the CLI answers --help.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax

import hyperadam_optax as ha
from hyperadam_optax.io.pretrained import PRETRAINED

here = pathlib.Path(__file__).resolve().parent
package = pathlib.Path(ha.__file__).resolve()
assert "site-packages" in package.parts, f"imported from {package}, not from the installed wheel"
assert ha.__version__ and ha.__version__ != "0+unknown", ha.__version__

factories = {"hyperadam": ha.hyperadam, "rnnprop": ha.rnnprop, "dm_optimizer": ha.dm_optimizer,
             "l2o_scale": ha.l2o_scale}
assert set(PRETRAINED) == set(factories), (PRETRAINED, sorted(factories))
params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.ones((2,))}
for name in PRETRAINED:
    theta = ha.load_pretrained(name)
    card = ha.pretrained_card(name)
    assert card["command"], name
    tx = factories[name]()
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    finite = all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))
    assert finite, f"{name}: non-finite update"
    moved = optax.apply_updates(params, updates)
    assert any(bool((a != b).any()) for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(params)))
    print(f"{name}: {len(jax.tree.leaves(theta))} weight arrays, card of {len(card)} keys, update ok")

cli = pathlib.Path(sys.executable).with_name("hyperadam-optax")
out = subprocess.run([str(cli), "--help"], capture_output=True, text=True, check=True).stdout
assert "meta-train" in out and "evaluate" in out, out
print(f"hyperadam-optax {ha.__version__} from {package.parent}: wheel smoke test passed")
