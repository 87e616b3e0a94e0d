"""Make HyperAdam's hand-set warm start with an open input path (``open_input_path``).

The shipped weights' untrained start, Adam(0.8, 0.9) at 8.8388 x 0.005 falling to a quarter
over 100 steps (``init_meta_params(init="adam", warm_start_decay=...)``), here with zero
kernels (``warm_start_scale=0``) and by default the clock whose rate is in log space
(``warm_start_clock="input_gate"``; the shipped start's is ``"cell_input"``, whose horizon a
meta-step of 3e-5 moves by 0.6%), so that ``open_input_path`` keeps its steps exactly: the
clock (unit 0) runs alone, the other 19 LSTM units read ``ĝ`` at size 1 (with
``normalization="global_rms"``, recorded in the file's ``make_kwargs``) and their readout
starts at zero.

    python research/input_path_start.py research/starts/hyperadam-input-path-gate.npz

(``research/starts/hyperadam-input-path.npz``, the start of the run ``ha-input-path``, is
the same with ``--clock cell_input``.) With ``--sign-agreement SCALE`` the StateCell also
reads the gradient's sign agreement (``with_sign_agreement_input``, that row of ``θ_p`` drawn
with std SCALE); the steps stay the start's:

    python research/input_path_start.py research/starts/hyperadam-sign-agreement.npz \
        --sign-agreement 3
"""

import argparse

import jax

import hyperadam_optax as ha
from hyperadam_optax.contrib import open_input_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--step", type=float, default=8.8388)
    p.add_argument("--betas", default="0.8,0.9")
    p.add_argument("--decay", default="100,0.25", help="HORIZON,FLOOR of the clock")
    p.add_argument("--clock", default="input_gate", choices=["cell_input", "input_gate"],
                   help="where the clock's rate lives (decay_counter_weights)")
    p.add_argument("--input-scale", type=float, default=1.0)
    p.add_argument("--sign-agreement", type=float, default=None, metavar="SCALE")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    betas = tuple(float(x) for x in args.betas.split(","))
    decay = tuple(float(x) for x in args.decay.split(","))
    k_init, k_open = jax.random.split(jax.random.key(args.seed))
    warm = ha.init_meta_params(k_init, 20, "adam", warm_start_scale=0.0,
                               warm_start_step=args.step, warm_start_betas=betas,
                               warm_start_decay=decay, warm_start_clock=args.clock)
    theta = open_input_path(warm, k_open, input_scale=args.input_scale)
    made_by = (f"open_input_path(init_meta_params(init='adam', warm_start_scale=0, "
               f"warm_start_step={args.step}, warm_start_betas={betas}, "
               f"warm_start_decay={decay}, warm_start_clock={args.clock!r}), "
               f"input_scale={args.input_scale})")
    if args.sign_agreement is not None:
        theta = ha.contrib.with_sign_agreement_input(theta, jax.random.fold_in(jax.random.key(args.seed), 1),
                                             scale=args.sign_agreement)
        made_by = f"with_sign_agreement_input({made_by}, scale={args.sign_agreement})"
    make_kwargs = {"normalization": "global_rms"}
    if args.sign_agreement is not None:
        make_kwargs["sign_agreement"] = True
    ha.save_meta_params(args.out, theta, {"make_kwargs": make_kwargs,
                                          "made_by": f"{made_by}, seed {args.seed}"})


if __name__ == "__main__":
    main()
