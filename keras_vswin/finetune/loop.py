"""The training loop of `keras-vswin train`: `model.fit`'s job under any `tf.distribute` strategy.

Keras' `fit` does not run under `MultiWorkerMirroredStrategy` (Keras 3.15 fails before the first
step, see `tests/test_training.py::test_keras_fit_fails_under_multi_worker_strategy`), so the
run uses this loop under every strategy, written on public APIs only: `strategy.run` in a
`tf.function`, the model's compiled loss and optimizer, Keras metrics (read across replicas),
`keras.callbacks.CallbackList` for the callbacks and the progress bar.
"""

from __future__ import annotations

import functools

import keras


def _flat_results(metrics):
    logs = {}
    for metric in metrics:
        result = metric.result()
        if isinstance(result, dict):
            logs.update(result)
        else:
            logs[metric.name] = result
    return logs


class StrategyLoop:
    """Trains and evaluates a compiled `model` under `strategy`.

    The model (and the `metrics`) must have been created, and the model compiled with its
    optimizer and loss, under `strategy.scope()`. One training step runs one micro-batch on
    every replica: forward pass, the compiled loss (averaged over the global batch), gradients,
    `model.optimizer.apply` (which all-reduces them), then the metrics.

    Args:
        model: a compiled Keras model.
        strategy: its `tf.distribute` strategy.
        metrics: Keras metrics of `(y_true, y_pred)`; a running mean `loss` is always logged.
        jit_compile: compile the step with XLA (default: `model.jit_compile`).
    """

    def __init__(self, model, strategy, metrics=(), jit_compile=None):
        import tensorflow as tf

        if model.optimizer is None or model.loss is None:
            raise ValueError("StrategyLoop needs a model compiled with an optimizer and a loss.")
        self.model = model
        self.strategy = strategy
        with strategy.scope():
            self.loss_metric = keras.metrics.Mean(name="loss")
        self.metrics = [self.loss_metric, *metrics]
        self.loss = keras.losses.get(model.loss)
        jit = bool(model.jit_compile if jit_compile is None else jit_compile)

        def one_train_step(data):
            strategy.run(self._train_replica_step, args=(data,))
            return _flat_results(self.metrics)  # read across replicas (and workers)

        def one_test_step(data):
            strategy.run(self._test_replica_step, args=(data,))

        # No AutoGraph: the steps branch on tensors only through explicit `cond`s, and
        # converting Keras' layer code took about half of the tracing time.
        function = functools.partial(tf.function, autograph=False, reduce_retracing=True)
        one_train_step = function(one_train_step, jit_compile=jit)
        self._test_step = function(one_test_step, jit_compile=jit)
        # The input is read outside the XLA cluster, as Keras' fit does.
        self._train_step = function(lambda iterator: one_train_step(next(iterator)))

    # -- the replica steps (inside `strategy.run`)

    def _loss(self, y, y_pred, sample_weight, num_replicas):
        # Keras losses divide by the replica count under a strategy; regularisation losses
        # are divided here so that the all-reduced gradient is the global batch's.
        loss = self.loss(y, y_pred, sample_weight)
        if self.model.losses:
            extra = keras.ops.sum([keras.ops.sum(v) for v in self.model.losses])
            loss = loss + keras.ops.cast(extra, loss.dtype) / num_replicas
        return loss

    def _update_metrics(self, loss, x, y, y_pred, sample_weight, num_replicas):
        batch = keras.ops.shape(x)[0]
        self.loss_metric.update_state(loss * num_replicas, sample_weight=batch)
        for metric in self.metrics[1:]:
            metric.update_state(y, y_pred, sample_weight=sample_weight)

    def _train_replica_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        model, optimizer = self.model, self.model.optimizer
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = self._loss(y, y_pred, sample_weight, num_replicas)
            scaled = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(scaled, variables), variables)
        self._update_metrics(loss, x, y, y_pred, sample_weight, num_replicas)

    def _test_replica_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        y_pred = self.model(x, training=False)
        loss = self._loss(y, y_pred, sample_weight, num_replicas)
        self._update_metrics(loss, x, y, y_pred, sample_weight, num_replicas)

    # -- loops

    def _reset_metrics(self):
        for metric in self.metrics:
            metric.reset_state()

    def _results(self):
        return {k: float(v) for k, v in _flat_results(self.metrics).items()}

    def evaluate(self, dataset, steps=None, callbacks=None):
        """Metrics over `dataset` (one pass, or `steps` batches): `{"loss": ..., ...}`."""
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        self._reset_metrics()
        if callbacks is not None:
            callbacks.on_test_begin()
        for step, batch in enumerate(distributed):
            if steps is not None and step >= steps:
                break
            if callbacks is not None:
                callbacks.on_test_batch_begin(step)
            self._test_step(batch)
            if callbacks is not None:
                callbacks.on_test_batch_end(step)
        logs = self._results()
        if callbacks is not None:
            callbacks.on_test_end(logs)
        return logs

    def fit(
        self,
        dataset_fn,
        epochs,
        steps_per_epoch,
        initial_epoch=0,
        initial_step=0,
        callbacks=(),
        validation_data=None,
        validation_freq=1,
        validation_steps=None,
        verbose=0,
    ):
        """Trains from `(initial_epoch, initial_step)` to the end of epoch `epochs - 1`.

        Args:
            dataset_fn: `dataset_fn(input_context)` -> the per-replica training batches, an
                endless stream that starts where training starts (the caller skips what
                `initial_step` says is done); see `distribute_datasets_from_function`.
            epochs: the epoch to stop before.
            steps_per_epoch: micro-batches per epoch.
            initial_epoch: the first epoch to run.
            initial_step: micro-batches of `initial_epoch` already done (a resumed run).
            callbacks: Keras callbacks; batch indices of the first epoch count from the
                restart, as `fit(steps_per_epoch=steps_per_epoch - initial_step)` would.
            validation_data: a finite `tf.data.Dataset` of `(x, y)`, or None.
            validation_freq: validate after every `validation_freq`-th epoch.
            validation_steps: batches of `validation_data` per validation (None: all).
            verbose: 0 silent, 1 progress bar, 2 one line per epoch.

        Returns:
            The `keras.callbacks.History` of the epochs run.
        """
        model = self.model
        params = {"verbose": verbose, "epochs": epochs, "steps": steps_per_epoch}
        history = keras.callbacks.History()
        callbacks = keras.callbacks.CallbackList(
            [*callbacks, history], add_progbar=verbose != 0, model=model, **params
        )
        iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        model.stop_training = False
        logs = {}
        callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            steps = steps_per_epoch - (initial_step if epoch == initial_epoch else 0)
            callbacks.set_params({**params, "steps": steps})
            self._reset_metrics()
            callbacks.on_epoch_begin(epoch)
            stopped = False
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                logs = self._train_step(iterator)
                callbacks.on_train_batch_end(step, logs)
                if model.stop_training:
                    stopped = True
                    break
            logs = self._results()
            if validation_data is not None and not stopped and (epoch + 1) % validation_freq == 0:
                results = self.evaluate(validation_data, validation_steps, callbacks)
                logs.update({f"val_{k}": v for k, v in results.items()})
            callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end(logs)
        return history
