"""Meta-training across processes on JAX's multi-controller runtime (``jax.distributed``):
two local CPU processes of 2 devices each against one process of 4 devices."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import hyperadam_optax as ha

CLI = [sys.executable, "-m", "hyperadam_optax.cli"]
RUN = ["meta-train", "--task", "quadratic", "--unroll", "5", "--trajectory", "10",
       "--meta-lr", "0.01", "--validation-tasks", "2", "--no-progress", "--checkpoint-every", "3"]
ESTIMATORS = {"pes": ["--estimator", "pes", "--num-particles", "4"],
              "tbptt": ["--num-tasks", "4"]}
#: The two processes' all-reduces add the slots' terms in another order than one process
#: does, so the meta-gradients agree to float32 rounding, not bit for bit; the outer Adam
#: divides each component by its own scale, so where a component is near zero a rounding
#: difference moves it by a small part of one meta-step (0.01): 1e-5 is a thousandth of it.
RTOL, ATOL = 1e-5, 1e-5


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_processes(out, other_out, args, heartbeat="100"):
    """Process 0 writes ``out``; process 1 is given ``other_out``, which must stay unmade
    (the only difference between the two commands)."""
    port = str(_free_port())
    return [subprocess.Popen(
        [*CLI, *RUN, *args, "--out-dir", str(d), "--coordinator", f"localhost:{port}",
         "--num-processes", "2", "--process-id", str(i), "--heartbeat-timeout", heartbeat],
        env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, d in enumerate((out, other_out))]


def _wait(procs, timeout=600):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def _one_process(out, args):
    r = subprocess.run([*CLI, *RUN, *args, "--out-dir", str(out)], env=_env(4),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _meta_rows(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if "meta_loss" in line]


def _assert_same_meta_params(a, b):
    for x, y in zip(ha.load_meta_params(a / "meta_params.npz"),
                    ha.load_meta_params(b / "meta_params.npz")):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.mark.slow  # three processes, each compiling its meta-step (about a minute each)
@pytest.mark.parametrize("estimator", ["pes", "tbptt"])
def test_two_processes_train_as_one_process_with_their_devices(tmp_path, estimator):
    args = [*ESTIMATORS[estimator], "--meta-steps", "6"]
    _wait(_start_processes(tmp_path / "two", tmp_path / "not-written", args))
    _one_process(tmp_path / "one", args)
    _assert_same_meta_params(tmp_path / "two", tmp_path / "one")
    assert not (tmp_path / "not-written").exists()  # process 1 wrote nothing
    rows = _meta_rows(tmp_path / "two")
    assert [r["step"] for r in rows] == list(range(1, 7))  # each row written once
    np.testing.assert_allclose([r["meta_loss"] for r in rows],
                               [r["meta_loss"] for r in _meta_rows(tmp_path / "one")],
                               rtol=RTOL)
    card = json.loads((tmp_path / "two" / "card.json").read_text())
    assert card["status"] == "finished" and len(card["devices"]) == 4


@pytest.mark.slow  # six processes (about four minutes)
def test_a_killed_process_stops_the_other_and_the_run_resumes(tmp_path):
    """SIGKILL one process mid-run: the other stops within the heartbeat timeout (JAX's
    coordination service) instead of waiting forever; both resumed end bit-identical to two
    processes that were never interrupted."""
    args = [*ESTIMATORS["pes"], "--meta-steps", "400"]
    out = tmp_path / "run"
    procs = _start_processes(out, tmp_path / "not-written", args, heartbeat="10")
    deadline = time.time() + 600
    while (not (out / "checkpoints" / "ckpt_00000003.npz").exists()
           and time.time() < deadline and procs[0].poll() is None):
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.time()
    _, err = procs[0].communicate(timeout=120)
    assert procs[0].returncode != 0 and time.time() - t_kill < 60
    assert "another task died" in err or "heartbeat" in err, err[-2000:]
    procs[1].communicate()
    done = [r["step"] for r in _meta_rows(out)]
    assert done and done[-1] < 400  # it really stopped early

    _wait(_start_processes(out, tmp_path / "not-written", [*args, "--resume"]))
    _wait(_start_processes(tmp_path / "full", tmp_path / "not-written", args))
    for x, y in zip(ha.load_meta_params(out / "meta_params.npz"),
                    ha.load_meta_params(tmp_path / "full" / "meta_params.npz")):
        np.testing.assert_array_equal(x, y)  # the same processes: resumed = uninterrupted
    assert [r["step"] for r in _meta_rows(out)] == list(range(1, 401))
    card = json.loads((out / "card.json").read_text())
    assert card["status"] == "finished" and len(card["commands"]) == 2
    assert not (tmp_path / "not-written").exists()


@pytest.mark.slow  # three processes evaluating (about two minutes)
def test_two_processes_evaluate_as_one_process_with_their_devices(tmp_path):
    """The runs split over the 4 devices of two processes: the same evaluation JSON (and
    tuned rates) as one process of 4 devices; process 1 writes nothing."""
    ev = ["evaluate", "--suite", "table2", "--optimizers", "adam,hyperadam", "--runs", "8",
          "--steps", "20", "--tune-runs", "4", "--no-progress"]
    port = str(_free_port())
    procs = [subprocess.Popen(
        [*CLI, *ev, "--out-dir", str(tmp_path / ("two" if i == 0 else "not-written")),
         "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = _wait(procs)
    assert "wall time" in outs[0][0] and "wall time" not in outs[1][0]  # one prints, writes
    r = subprocess.run([*CLI, *ev, "--out-dir", str(tmp_path / "one")], env=_env(4),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("table2.json", "tuning_cache.json"):
        assert (json.loads((tmp_path / "two" / name).read_text())
                == json.loads((tmp_path / "one" / name).read_text())), name
    assert not (tmp_path / "not-written").exists()
    port = str(_free_port())
    procs = [subprocess.Popen(  # 6 runs cannot be split over 4 devices: refused by both
        [*CLI, *ev[:6], "6", *ev[7:], "--out-dir", str(tmp_path / f"bad{i}"), "--coordinator",
         f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 2 and "--runs (6) must be a multiple of the number of devices (4)" \
            in err, err[-2000:]
    assert not any(tmp_path.glob("bad*"))


@pytest.mark.parametrize("args, message", [
    (("localhost:1", 2, None), "needs --coordinator HOST:PORT, --num-processes and --process-id"),
    ((None, 2, 0), "needs --coordinator HOST:PORT, --num-processes and --process-id"),
    (("localhost:1", 2, 2), r"--process-id must be in \[0, --num-processes\) = \[0, 2\), got 2"),
])
def test_joining_is_refused_before_jax_starts_when_the_flags_do_not_go_together(args, message):
    from hyperadam_optax.meta.processes import join

    with pytest.raises(ValueError, match=message):
        join(*args)
    with pytest.raises(ValueError, match="--distributed auto detects"):
        join("localhost:1", None, None, auto=True)


def test_one_process_is_its_own_writer_and_nothing_is_sent():
    import jax

    from hyperadam_optax.meta import processes

    tree = {"a": np.arange(3.0), "b": jax.numpy.ones(2)}
    assert processes.is_writer() and processes.from_writer(tree) is tree
    assert processes.json_from_writer({"k": [1, 2]}) == {"k": [1, 2]}
    host = processes.to_host(tree)
    assert all(isinstance(x, np.ndarray) for x in host.values())
    keys = np.arange(6)
    assert processes.spread(keys) is keys  # one device: the runs stay where they are


def test_cli_refuses_a_partial_multi_process_request(tmp_path, capsys):
    from hyperadam_optax.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["meta-train", "--task", "quadratic", "--process-id", "0",
              "--out-dir", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "needs --coordinator HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
