"""AdamW with per-variable learning rates and weight decay, and the paper's parameter groups.

- `ParamGroupAdamW`: AdamW with a learning-rate and a weight-decay multiplier per variable
  (chosen by regular expressions on `variable.path`), and gradient accumulation that also works
  under `tf.distribute` strategies (Keras' own `gradient_accumulation_steps` does not).
- `recipe_param_rules`: the official parameter groups (backbone lr x0.1, no decay for the relative
  position bias tables and the norms).
"""

from __future__ import annotations

import re

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_vswin"

# --------------------------------------------------------------------------------------------
# Parameter groups

# Variable paths of a `keras_vswin.VideoSwin` model, e.g. "stage0_block1/norm2/gamma",
# "stage0_block1/attn/relative_position_bias_table", "predictions/kernel".
HEAD_PATTERN = r"^predictions/"
BACKBONE_PATTERN = r"^(?!predictions/)"
BIAS_TABLE_PATTERN = r"(^|/)relative_position_bias_table$"
NORM_PATTERN = r"(^|/)norm\d*/(gamma|beta)$"  # every LayerNormalization of the model

PARAM_GROUP_STYLES = ("paper", "mmcv")


def recipe_param_rules(backbone_lr_mult=0.1, style="paper"):
    """The official parameter groups as `ParamGroupAdamW.param_rules`.

    The official config (mmcv `paramwise_cfg.custom_keys`) lists: `relative_position_bias_table`
    and `norm` with `decay_mult=0`, `backbone` with `lr_mult=0.1`.

    Args:
        backbone_lr_mult: learning-rate multiplier of every non-head variable.
        style: "paper" applies every listed rule that matches a variable, as the paper and the
            config read: backbone lr x0.1 everywhere in the backbone, no decay on the bias
            tables and on all norms. "mmcv" reproduces what mmcv's `DefaultOptimizerConstructor`
            actually does with that config: only the longest matching key applies, so the bias
            tables keep lr x1 (no decay) and the backbone norms get lr x0.1 *with* decay.

    Returns:
        A list of `{"pattern", "lr_mult", "decay_mult"}` dicts.
    """
    if style == "paper":
        return [
            {"pattern": BIAS_TABLE_PATTERN, "decay_mult": 0.0},
            {"pattern": NORM_PATTERN, "decay_mult": 0.0},
            {"pattern": BACKBONE_PATTERN, "lr_mult": float(backbone_lr_mult)},
        ]
    if style == "mmcv":
        # mmcv sorts the keys by length, longest first, and stops at the first substring match.
        return [
            {"pattern": BIAS_TABLE_PATTERN, "decay_mult": 0.0, "first_match": True},
            {"pattern": BACKBONE_PATTERN, "lr_mult": float(backbone_lr_mult), "first_match": True},
            {"pattern": NORM_PATTERN, "decay_mult": 0.0, "first_match": True},
        ]
    raise ValueError(f"`style` must be one of {PARAM_GROUP_STYLES}, got {style!r}.")


def _check_rules(rules):
    checked = []
    for i, rule in enumerate(rules or ()):
        rule = dict(rule)
        unknown = set(rule) - {"pattern", "lr_mult", "decay_mult", "first_match"}
        if "pattern" not in rule or unknown:
            raise ValueError(
                f"param_rules[{i}] must be a dict with a 'pattern' and optional 'lr_mult', "
                f"'decay_mult', 'first_match' keys, got {rule!r}."
            )
        try:
            re.compile(rule["pattern"])
        except (re.error, TypeError) as error:
            raise ValueError(
                f"param_rules[{i}]['pattern'] is not a regular expression: {error}"
            ) from None
        for key in ("lr_mult", "decay_mult"):
            value = rule.setdefault(key, 1.0)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"param_rules[{i}][{key!r}] must be a number >= 0, got {value!r}.")
            rule[key] = float(value)
        rule["first_match"] = bool(rule.get("first_match", False))
        checked.append(rule)
    return checked


def param_multipliers(path, rules):
    """`(lr_mult, decay_mult)` of the variable at `path` under `rules`.

    Every rule whose `pattern` is found in `path` (`re.search`) multiplies the two values; a
    matching rule with `first_match=True` also ends the search (mmcv's behaviour).
    """
    lr_mult = decay_mult = 1.0
    for rule in _check_rules(rules):
        if re.search(rule["pattern"], path):
            lr_mult *= rule["lr_mult"]
            decay_mult *= rule["decay_mult"]
            if rule["first_match"]:
                break
    return lr_mult, decay_mult


def describe_param_groups(variables, rules, weight_decay=None):
    """Groups `variables` by their multipliers: a list of dicts, one per group.

    Each dict has `lr_mult`, `decay_mult`, `weight_decay` (when given), `variables` (count),
    `parameters` (count) and `examples` (a few paths).
    """
    groups = {}
    for variable in variables:
        key = param_multipliers(variable.path, rules)
        group = groups.setdefault(key, {"variables": 0, "parameters": 0, "examples": []})
        group["variables"] += 1
        group["parameters"] += int(np.prod(variable.shape))
        if len(group["examples"]) < 3:
            group["examples"].append(variable.path)
    table = []
    for (lr_mult, decay_mult), group in sorted(groups.items(), reverse=True):
        row = {"lr_mult": lr_mult, "decay_mult": decay_mult}
        if weight_decay is not None:
            row["weight_decay"] = weight_decay * decay_mult
        table.append({**row, **group})
    return table


class _ParamGroups:
    """The variables an optimizer was built for and their multipliers.

    A plain object on purpose: Keras' optimizer tracks the variables held in its lists and
    dicts, and these are the model's, not the optimizer's.
    """

    def __init__(self, variables, rules):
        self.variables = tuple(variables)
        pairs = [param_multipliers(v.path, rules) for v in self.variables]
        self.lr_mults = tuple(p[0] for p in pairs)
        self.decay_mults = tuple(p[1] for p in pairs)
        self._index = {id(v): i for i, v in enumerate(self.variables)}

    def index(self, variable):
        try:
            return self._index[id(variable)]
        except KeyError:
            name = getattr(variable, "path", getattr(variable, "name", variable))
            raise ValueError(
                f"ParamGroupAdamW got a gradient for {name}, a variable it was not built for: "
                "build a new optimizer for new variables."
            ) from None


@keras.saving.register_keras_serializable(package=PACKAGE)
class ParamGroupAdamW(keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate and weight-decay multipliers.

    A variable's update is PyTorch/mmcv AdamW with `lr = schedule(step) * lr_mult` and
    `weight_decay = weight_decay * decay_mult`: the decoupled decay `var -= lr * wd * var` uses
    the variable's own learning rate. The multipliers come from `param_rules` (see
    `param_multipliers`) matched against `variable.path`; unmatched variables use 1.0.

    Gradient accumulation (`gradient_accumulation_steps=N`) averages N micro-batch gradients
    per update and works under `tf.distribute` strategies (Keras' own accumulation fails there,
    see `tests/test_training.py::test_keras_accumulation_fails_under_mirrored_strategy`):
    gradients are all-reduced every micro-batch, accumulated on every replica's copy and applied
    every N-th call. `iterations` and the learning-rate schedule count optimizer updates, not
    micro-batches.

    `apply` is the one entry point (also of `apply_gradients` and Keras' `fit`); on TensorFlow
    it must run in a replica context (inside `strategy.run`, as `fit` calls it). Not supported:
    `use_ema`, `exclude_from_weight_decay` (use `param_rules` with `decay_mult=0`), variable
    constraints, clipping together with accumulation, accumulation on the JAX backend.

    Args:
        learning_rate: a float or a `LearningRateSchedule` of the optimizer step.
        weight_decay: the base decoupled weight decay.
        param_rules: list of `{"pattern", "lr_mult", "decay_mult", "first_match"}` dicts
            (see `recipe_param_rules`).
        gradient_accumulation_steps: micro-batches per update (None or >= 2).
        **kwargs: the other `keras.optimizers.AdamW` arguments (`beta_1`, `beta_2`, `epsilon`,
            `clipnorm`, ...).
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.02,
        param_rules=None,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        kwargs.setdefault("epsilon", 1e-8)  # PyTorch's AdamW default
        if kwargs.get("use_ema"):
            raise ValueError("ParamGroupAdamW does not support `use_ema=True`.")
        # Keras' own accumulation is not used (it fails under tf.distribute): this class
        # accumulates in `apply` and keeps the number itself.
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        if gradient_accumulation_steps is not None and (
            not isinstance(gradient_accumulation_steps, int) or gradient_accumulation_steps < 2
        ):
            raise ValueError(
                "`gradient_accumulation_steps` must be None or an integer >= 2, got "
                f"{gradient_accumulation_steps!r}."
            )
        if gradient_accumulation_steps and keras.backend.backend() == "jax":
            raise ValueError(
                "ParamGroupAdamW's gradient_accumulation_steps needs the TensorFlow or PyTorch "
                "backend (JAX applies optimizers statelessly)."
            )
        self.accumulation_steps = gradient_accumulation_steps
        self.param_rules = _check_rules(param_rules)
        if self.accumulation_steps and (self.clipnorm or self.clipvalue or self.global_clipnorm):
            raise ValueError(
                "Gradient clipping is not supported together with gradient_accumulation_steps."
            )

    def multipliers(self, variable):
        """`(lr_mult, decay_mult)` of a model variable."""
        return param_multipliers(variable.path, self.param_rules)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        raise NotImplementedError(
            "ParamGroupAdamW takes its weight-decay exclusions from `param_rules` "
            "(a rule with decay_mult=0)."
        )

    def build(self, variables):
        if self.built:
            return
        for variable in variables:
            if getattr(variable, "constraint", None) is not None:
                raise ValueError(
                    f"ParamGroupAdamW does not apply variable constraints; {variable.path} has one."
                )
            if getattr(variable, "overwrite_with_gradient", False):
                raise ValueError(
                    "ParamGroupAdamW does not support `overwrite_with_gradient` variables "
                    f"({variable.path})."
                )
        super().build(variables)
        self._groups = _ParamGroups(variables, self.param_rules)
        if self.accumulation_steps:
            self._accumulators = [
                self.add_variable_from_reference(v, name="gradient_accumulator") for v in variables
            ]
            self._micro_steps = self.add_variable(
                shape=(),
                dtype="int",
                initializer="zeros",
                aggregation="only_first_replica",
                name="micro_steps",
            )

    def apply(self, grads, trainable_variables=None):
        """Applies (or accumulates) one micro-batch of gradients; see the class docstring."""
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "ParamGroupAdamW.apply() without variables needs a built optimizer: call "
                    "`optimizer.build(model.trainable_variables)` first."
                )
            trainable_variables = self._groups.variables
        grads, trainable_variables = list(grads), list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"ParamGroupAdamW.apply() got {len(grads)} gradients for "
                f"{len(trainable_variables)} variables."
            )
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        pairs = [(g, v) for g, v in zip(grads, trainable_variables) if g is not None]
        if not pairs:
            return
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        indices = [self._groups.index(v) for v in variables]
        if self.loss_scale_factor is not None:
            grads = [g / self.loss_scale_factor for g in grads]
        with keras.name_scope(self.name, caller=self):
            if keras.backend.backend() == "tensorflow":
                self._apply_tensorflow(grads, variables, indices)
            else:
                self._apply_eagerly(grads, variables, indices)

    # -- the update of one variable

    def _update(self, index):
        """`update(variable, gradient, learning_rate)` of the variable at `index`."""
        lr_mult = self._groups.lr_mults[index]
        decay_mult = self._groups.decay_mults[index]

        def update(variable, gradient, learning_rate):
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), lr_mult)
            if self.weight_decay and decay_mult:
                decay = ops.cast(self.weight_decay * decay_mult, variable.dtype)
                self.assign_sub(variable, ops.multiply(variable, decay * learning_rate))
            self.update_step(gradient, variable, learning_rate)

        return update

    def _accumulate_or_update(self, index):
        """`fn(variable, gradient, learning_rate, is_update)`: adds the gradient to the
        variable's accumulator, or on an update step applies the accumulated mean and clears
        the accumulator."""
        import tensorflow as tf

        update = self._update(index)
        accumulator = self._accumulators[index]
        steps = self.accumulation_steps

        def accumulate_or_update(variable, gradient, learning_rate, is_update):
            def apply():
                update(
                    variable, ops.divide(ops.add(accumulator.value, gradient), steps), learning_rate
                )
                self.assign(accumulator, ops.zeros_like(accumulator.value))

            def accumulate():
                self.assign_add(accumulator, gradient)

            tf.cond(is_update, apply, accumulate)

        return accumulate_or_update

    def _clip(self, grads):
        """Keras' `clipvalue`, `clipnorm` (per gradient) or `global_clipnorm`."""

        def scaled(values, norm, limit):
            return [v * ops.minimum(1.0, limit / ops.maximum(norm, 1e-12)) for v in values]

        if self.clipvalue:
            return [ops.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm:
            return [scaled([g], ops.sqrt(ops.sum(ops.square(g))), self.clipnorm)[0] for g in grads]
        if self.global_clipnorm:
            norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads))
            return scaled(grads, norm, self.global_clipnorm)
        return grads

    def _is_update(self):
        return ops.equal((self._micro_steps + 1) % self.accumulation_steps, 0)

    def _count(self, is_update=None):
        if self.accumulation_steps:
            self._micro_steps.assign_add(1)
            self.iterations.assign_add(ops.cast(is_update, self.iterations.dtype))
        else:
            self.iterations.assign_add(1)

    def _apply_tensorflow(self, grads, variables, indices):
        import tensorflow as tf

        # Public tf.distribute only: the replica context sums the gradients over replicas
        # (Keras' losses divide by the replica count), and `extended.update` runs the
        # per-variable update on each replica's copy (through `merge_call` where the strategy
        # needs one). The accumulate-or-update choice is made inside that per-copy function:
        # a condition around a synchronisation point is what breaks Keras' own accumulation.
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError(
                "ParamGroupAdamW.apply() must be called in a replica context "
                "(inside `strategy.run`), not in the cross-replica context."
            )
        if context.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        extended = context.strategy.extended
        learning_rate = self.learning_rate
        if self.accumulation_steps:
            is_update = self._is_update()
            for gradient, variable, index in zip(grads, variables, indices):
                extended.update(
                    variable.value,
                    self._accumulate_or_update(index),
                    args=(gradient, learning_rate, is_update),
                    group=False,
                )
            self._count(is_update)
        else:
            for gradient, variable, index in zip(self._clip(grads), variables, indices):
                extended.update(
                    variable.value, self._update(index), args=(gradient, learning_rate), group=False
                )
            self._count()

    def _apply_eagerly(self, grads, variables, indices):
        """PyTorch and JAX: no distribution strategy; accumulation (PyTorch) with `ops.cond`."""
        learning_rate = self.learning_rate
        if not self.accumulation_steps:
            for gradient, variable, index in zip(self._clip(grads), variables, indices):
                self._update(index)(variable, gradient, learning_rate)
            self._count()
            return
        is_update = self._is_update()

        def apply():
            for gradient, variable, index in zip(grads, variables, indices):
                accumulator = self._accumulators[index]
                mean = ops.divide(ops.add(accumulator, gradient), self.accumulation_steps)
                self._update(index)(variable, mean, learning_rate)
                self.assign(accumulator, ops.zeros_like(accumulator))

        def accumulate():
            for gradient, index in zip(grads, indices):
                self.assign_add(self._accumulators[index], gradient)

        ops.cond(is_update, apply, accumulate)
        self._count(is_update)

    def get_config(self):
        return {
            **super().get_config(),
            "param_rules": self.param_rules,
            "gradient_accumulation_steps": self.accumulation_steps,
        }
