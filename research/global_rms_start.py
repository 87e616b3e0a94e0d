"""Convert HyperAdam weights to the ``global_rms`` normalisation at a reference size.

``global_rms_equivalent(Θ, N)`` takes exactly Θ's steps on problems of N coordinates (the
784-20-10 MNIST MLP the shipped weights were chosen on has N = 15,910), so a global_rms run
started from it starts where the shipped weights are, and can learn inputs of size 1.

    python research/global_rms_start.py hyperadam_optax/pretrained/hyperadam.npz \
        research/starts/hyperadam-global-rms.npz --coordinates 15910
"""

import argparse

import hyperadam_optax as ha
from hyperadam_optax.io import make_kwargs_of


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="HyperAdam weights made for global_l2 (the default)")
    p.add_argument("out")
    p.add_argument("--coordinates", type=int, default=15910)
    args = p.parse_args(argv)
    theta, metadata = ha.load_meta_params(args.source, with_metadata=True)
    if make_kwargs_of(metadata):
        raise SystemExit(f"{args.source} is made for {make_kwargs_of(metadata)}, not global_l2")
    ha.save_meta_params(args.out, ha.contrib.global_rms_equivalent(theta, args.coordinates), {
        "make_kwargs": {"normalization": "global_rms"},
        "made_by": f"global_rms_equivalent({args.source}, {args.coordinates})",
        "source_step": metadata.get("chosen_checkpoint", {}).get("meta_step"),
    })


if __name__ == "__main__":
    main()
