"""Contrastive loss of Concerto (Methods eqs 7-9)."""

from __future__ import annotations

import tensorflow as tf


def nt_xent_loss(z_teacher, z_student, temperature: float = 0.1):
    """NT-Xent between teacher and student views of the same N cells.

    ``z_teacher``, ``z_student``: (N, d). The 2N embeddings are L2-normalised; for each
    of them the positive is the other view of the same cell and the remaining 2(N-1)
    embeddings are negatives (eq 8); the loss is averaged over all 2N anchors (eq 9).
    """
    z = tf.math.l2_normalize(tf.concat([z_teacher, z_student], axis=0), axis=1)  # (2N, d)
    n = tf.shape(z_teacher)[0]
    sim = tf.matmul(z, z, transpose_b=True) / temperature  # eq 7, (2N, 2N)
    eye = tf.eye(2 * n, dtype=tf.bool)
    sim_no_self = tf.where(eye, tf.constant(-1e9, sim.dtype), sim)  # k != i in eq 8
    positive_index = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    positive = tf.gather(sim, positive_index, batch_dims=1)
    per_anchor = tf.reduce_logsumexp(sim_no_self, axis=1) - positive
    return tf.reduce_mean(per_anchor)
