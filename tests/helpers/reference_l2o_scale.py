"""L2O-Scale written independently in plain float64 NumPy, one coordinate at a time where the
paper's text does (loops instead of the package's broadcasting), for the reference tests."""

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gru(x, h, gate_w, gate_b, cand_w, cand_b, bias):
    n = h.shape[0]
    gates = _sigmoid(np.concatenate([x, h]) @ gate_w + gate_b + bias[:2 * n])
    r, u = gates[:n], gates[n:]
    c = np.tanh(np.concatenate([x, r * h]) @ cand_w + cand_b + bias[2 * n:])
    return u * h + (1 - u) * c


class ReferenceL2OScale:
    """``step(grads)`` with ``grads`` a list of arrays (the leaves); returns the steps
    ``exp(l' + c) δ`` (before the learning rate's minus sign)."""

    def __init__(self, theta, shapes, initial_log_lr):
        self.w = {k: np.asarray(v, np.float64) for k, v in theta._asdict().items()}
        w = self.w
        k = w["shortcut_w"].shape[0]
        self.a = [np.zeros(s + (k,)) for s in shapes]
        self.ms = [np.zeros(s + (k,)) for s in shapes]
        self.log_lr = [np.full(s, initial_log_lr) for s in shapes]
        self.h = [np.broadcast_to(w["param_init"], s + w["param_init"].shape).copy()
                  for s in shapes]
        self.tensor = [w["tensor_init"].copy() for _ in shapes]
        self.glob = w["global_init"].copy()
        self.t = 0

    def step(self, grads):
        w = self.w
        self.t += 1
        k = w["shortcut_w"].shape[0]
        total = sum(l.size for l in self.log_lr)
        mean_log_lr = sum(l.sum() for l in self.log_lr) / total
        out, new_tensors = [], []
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            h_new = np.zeros_like(self.h[i])
            delta = np.zeros(g.shape)
            step_log_lr = np.zeros(g.shape)
            xs = np.zeros(g.shape + (3 * k,))
            for idx in np.ndindex(g.shape):
                h = self.h[i][idx]
                d1 = _sigmoid(h @ w["decay_w"] + w["decay_b"])
                s = 0.0 if self.t == 1 else _sigmoid(h @ w["ms_decay_w"] + w["ms_decay_b"])
                scaled, log_ms = np.zeros(k), np.zeros(k)
                for j in range(k):
                    d = d1 ** (0.5 ** j)
                    self.a[i][idx + (j,)] = (1 - d) * g[idx] + d * self.a[i][idx + (j,)]
                    a = self.a[i][idx + (j,)]
                    self.ms[i][idx + (j,)] = (1 - s) * (a * a + 1e-12) + s * self.ms[i][idx + (j,)]
                    ms = self.ms[i][idx + (j,)]
                    scaled[j] = np.arcsinh(a / np.sqrt(ms + 1e-16))
                    log_ms[j] = np.log(ms + 1e-16)
                x = np.concatenate([scaled, scaled[:-1] * scaled[1:], log_ms - log_ms.mean(),
                                    [self.log_lr[i][idx] - mean_log_lr]])
                xs[idx] = x
                bias = (self.tensor[i] @ w["tensor_to_param_w"] + w["tensor_to_param_b"]
                        + self.glob @ w["global_to_param_w"] + w["global_to_param_b"])
                h_new[idx] = _gru(x, h, w["param_gate_w"], w["param_gate_b"], w["param_cand_w"],
                                  w["param_cand_b"], bias)
                delta[idx] = h_new[idx] @ w["update_w"] + scaled @ w["shortcut_w"]
                step_log_lr[idx] = np.clip(self.log_lr[i][idx] + h_new[idx] @ w["lr_w"]
                                           + w["lr_b"], -33.0, 33.0)
            tensor_in = np.concatenate([h_new, xs], axis=-1).reshape(-1, h_new.shape[-1]
                                                                     + 3 * k).mean(axis=0)
            new_tensors.append(_gru(tensor_in, self.tensor[i], w["tensor_gate_w"],
                                    w["tensor_gate_b"], w["tensor_cand_w"], w["tensor_cand_b"],
                                    self.glob @ w["global_to_tensor_w"] + w["global_to_tensor_b"]))
            delta = delta / np.sqrt(np.mean(delta ** 2) + 1e-16)
            m = _sigmoid(w["lr_momentum_logit"])
            self.log_lr[i] = m * self.log_lr[i] + (1 - m) * step_log_lr
            self.h[i] = h_new
            out.append(np.exp(step_log_lr + w["lr_offset"]) * delta)
        self.glob = _gru(np.mean(new_tensors, axis=0), self.glob, w["global_gate_w"],
                         w["global_gate_b"], w["global_cand_w"], w["global_cand_b"],
                         np.zeros(3 * self.glob.shape[0]))
        self.tensor = new_tensors
        return out
