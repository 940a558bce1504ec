"""IMTL (Liu et al., ICLR 2021): IMTL-L loss scaling (learnable s_k, loss e^{s_k} L_k - s_k,
s_k starting at 0) and IMTL-G gradient weighting: the update d = sum_k a_k g_k with sum a = 1
has equal projections onto every unit task gradient u_k. Closed form
    a_{2:K} = g_1 U^T (D U^T)^{-1},  D = [g_1 - g_k], U = [u_1 - u_k],
solved by least squares so singular cases do not crash. Sum scale: K * d.

A task without targets in a batch is left out of the step: its gradient is zero, so IMTL-G's
solve runs on the other tasks (`GradientMethod.solve`; IMTL's equal projections onto a zero
gradient are undefined), and its IMTL-L term is dropped, so s_k does not move (with L_k = 0 the
term e^{s_k} L_k - s_k would push s_k up on every such batch)."""

from __future__ import annotations

import torch

from repeval.training.methods.base import LearnsTaskScalars
from repeval.training.methods.gradient import GradientMethod


def imtl_g_weights(gram: torch.Tensor) -> torch.Tensor:
    """From the Gram matrix alone: with P[i, j] = g_i . u_j = M[i, j] / ||g_j||,
    (D U^T)[i, j] = (P[0,0] - P[0,j]) - (P[i,0] - P[i,j]) and (g_1 U^T)[j] = P[0,0] - P[0,j]."""
    k = len(gram)
    norms = torch.sqrt(gram.diagonal().clamp_min(0))
    if k == 1 or (norms == 0).any():  # the step's solve has already left zero gradients out
        return torch.full((k,), 1.0 / k, dtype=gram.dtype)
    p = gram / norms[None, :]
    rhs = p[0, 0] - p[0, 1:]
    a = rhs[None, :] - (p[1:, 0:1] - p[1:, 1:])
    rest = torch.linalg.lstsq(a.T, rhs[:, None]).solution[:, 0]
    return torch.cat([(1 - rest.sum())[None], rest])


class IMTL(LearnsTaskScalars, GradientMethod):
    supports_rep_grad = True  # the IMTL paper takes task gradients at the shared feature

    def __init__(self, num_tasks: int, rep_grad: bool = False):
        super().__init__(num_tasks, rep_grad=rep_grad)
        self.init_scalars(num_tasks, 0.0)

    @property
    def log_scale(self) -> torch.Tensor:
        return self.scalars

    def task_losses(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        self.reported["loss_scale"] = torch.exp(self.log_scale.detach())
        return torch.where(present, torch.exp(self.log_scale) * losses - self.log_scale, 0)

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        return len(gram) * imtl_g_weights(gram)

