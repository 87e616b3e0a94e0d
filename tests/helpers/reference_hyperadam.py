"""An independent, plainly written float64 NumPy reference of HyperAdam (Alg. 2).

One flat parameter vector of p coordinates; every array is (p, J). Written from the
paper and the reference notes, without sharing code with the package.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


class ReferenceHyperAdam:
    def __init__(self, theta, p, eps=1e-24, normalization="global_l2"):
        self.t = {k: np.asarray(v, np.float64) for k, v in theta._asdict().items()}
        # Euclidean norm over the p coordinates, or root mean square ("global_rms").
        self.per = p if normalization == "global_rms" else 1
        J = self.t["b_u"].shape[0]
        self.J, self.eps = J, eps
        z = np.zeros((p, J))
        self.m, self.v, self.bh, self.gh, self.s, self.c = (z.copy() for _ in range(6))

    def direction(self, g):
        t, J, eps = self.t, self.J, self.eps
        g = np.asarray(g, np.float64)
        # StateCell
        gn = g / np.sqrt((np.sum(g * g) + 1e-16) / self.per)
        if len(t["theta_p"]) == 2:  # extension: also the sign agreement of the last moments
            agree = np.mean(np.abs(self.m / (self.bh + eps)) / np.sqrt(self.v / (self.gh + eps)
                                                                         + eps), axis=1)
            x = elu(np.stack([gn, agree], axis=1) @ t["theta_p"] + t["b_p"])
        else:
            x = elu(gn[:, None] @ t["theta_p"] + t["b_p"])
        z = np.concatenate([x, self.s], axis=1) @ t["theta_h"] + t["b_h"]
        i, jj, f, o = z[:, :J], z[:, J:2 * J], z[:, 2 * J:3 * J], z[:, 3 * J:]
        self.c = sigmoid(f) * self.c + sigmoid(i) * np.tanh(jj)
        s = sigmoid(o) * np.tanh(self.c)
        # AdamCell
        m_n = self.m / np.sqrt((np.sum(self.m ** 2, axis=0, keepdims=True) + 1e-16) / self.per)
        s_n = s / np.sqrt((np.sum(s ** 2, axis=0, keepdims=True) + 1e-16) / self.per)
        inp = np.concatenate([m_n, s_n], axis=1)
        beta = sigmoid(inp @ t["theta_u"] + t["b_u"])
        gamma = sigmoid(inp @ t["theta_r"] + t["b_r"])
        G = np.repeat(g[:, None], J, axis=1)
        self.m = beta * self.m + (1 - beta) * G
        self.v = gamma * self.v + (1 - gamma) * G ** 2
        self.bh = beta * self.bh + (1 - beta)
        self.gh = gamma * self.gh + (1 - gamma)
        m_tilde = self.m / (self.bh + eps)
        v_tilde = self.v / (self.gh + eps)
        m_hat = m_tilde / np.sqrt(v_tilde + eps)
        # WeightCell and combination
        rho = elu(s @ t["theta_q"] + t["b_q"])
        self.s = s
        self.last = {"beta": beta, "gamma": gamma, "rho": rho}
        return np.sum(rho * m_hat, axis=1)
