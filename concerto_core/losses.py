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


def nt_xent_loss_replica(z_teacher, z_student, temperature: float = 0.1):
    """This replica's share of the NT-Xent loss of the *global* mini-batch.

    Embeddings of all replicas are all-gathered, so every anchor sees the 2(N-1) negatives
    of the global batch of N cells (not only its replica's). Each replica returns the sum
    of its own anchors' terms divided by 2N; summing over replicas (what the optimizer's
    gradient all-reduce does) gives exactly eq 9 on the global batch. Without several
    replicas this is :func:`nt_xent_loss`.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return nt_xent_loss(z_teacher, z_student, temperature)
    n_local = tf.shape(z_teacher)[0]
    sizes = ctx.all_gather(n_local[None], axis=0)
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica])
    n = tf.reduce_sum(sizes)
    teachers = ctx.all_gather(z_teacher, axis=0)
    students = ctx.all_gather(z_student, axis=0)
    z = tf.math.l2_normalize(tf.concat([teachers, students], axis=0), axis=1)  # (2N, d)
    local = tf.range(n_local) + offset
    anchors = tf.concat([local, local + n], axis=0)  # this replica's teacher and student rows
    positives = tf.concat([local + n, local], axis=0)
    sim = tf.matmul(tf.gather(z, anchors), z, transpose_b=True) / temperature  # (2n_local, 2N)
    self_mask = tf.equal(anchors[:, None], tf.range(2 * n)[None, :])
    sim_no_self = tf.where(self_mask, tf.constant(-1e9, sim.dtype), sim)
    positive = tf.gather(sim, positives, batch_dims=1)
    per_anchor = tf.reduce_logsumexp(sim_no_self, axis=1) - positive
    return tf.reduce_sum(per_anchor) / tf.cast(2 * n, per_anchor.dtype)
