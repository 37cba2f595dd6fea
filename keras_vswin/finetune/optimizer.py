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


@keras.saving.register_keras_serializable(package=PACKAGE)
class ParamGroupAdamW(keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate and weight-decay multipliers.

    A variable's update is PyTorch/mmcv AdamW with `lr = schedule(step) * lr_mult` and
    `weight_decay = weight_decay * decay_mult`: the decoupled decay `var -= lr * wd * var` uses
    the variable's own learning rate. The multipliers come from `param_rules` (see
    `param_multipliers`) matched against `variable.path`; unmatched variables use 1.0.

    Gradient accumulation (`gradient_accumulation_steps=N`) averages N micro-batch gradients
    per update and works under `tf.distribute` strategies: gradients are all-reduced every
    micro-batch, accumulated per replica and applied every N-th call. `iterations` and the
    learning-rate schedule count optimizer updates, not micro-batches.

    Args:
        learning_rate: a float or a `LearningRateSchedule` of the optimizer step.
        weight_decay: the base decoupled weight decay.
        param_rules: list of `{"pattern", "lr_mult", "decay_mult", "first_match"}` dicts
            (see `recipe_param_rules`).
        **kwargs: the other `keras.optimizers.AdamW` arguments (`beta_1`, `beta_2`, `epsilon`,
            `gradient_accumulation_steps`, ...).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.02, param_rules=None, **kwargs):
        kwargs.setdefault("epsilon", 1e-8)  # PyTorch's AdamW default
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.param_rules = _check_rules(param_rules)
        if self.gradient_accumulation_steps and (
            self.clipnorm or self.clipvalue or self.global_clipnorm
        ):
            raise ValueError(
                "Gradient clipping is not supported together with gradient_accumulation_steps."
            )

    def multipliers(self, variable):
        """`(lr_mult, decay_mult)` of a model variable."""
        return param_multipliers(variable.path, self.param_rules)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        pairs = [self.multipliers(v) for v in variables]
        self._lr_mults = tuple(p[0] for p in pairs)
        self._decay_mults = tuple(p[1] for p in pairs)

    def _get_current_learning_rate(self):
        # The schedule counts optimizer updates (Keras would pass the micro-batch counter).
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _apply_weight_decay(self, variables):
        pass  # applied per variable in `update_step`, with the variable's learning rate

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        lr_mult, decay_mult = self._lr_mults[index], self._decay_mults[index]
        learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), lr_mult)
        if self.weight_decay and decay_mult:
            decay = ops.cast(self.weight_decay * decay_mult, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, decay * learning_rate))
        super().update_step(gradient, variable, learning_rate)

    def _backend_apply_gradients(self, grads, trainable_variables):
        if not self.gradient_accumulation_steps or keras.backend.backend() != "tensorflow":
            return super()._backend_apply_gradients(grads, trainable_variables)
        import tensorflow as tf

        steps = self.gradient_accumulation_steps
        is_update = ops.equal((self._iterations + 1) % steps, 0)
        learning_rate = self.learning_rate
        tf_variables = [
            v.value if isinstance(v, keras.Variable) else v for v in trainable_variables
        ]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, tf_variables)))

        def accumulate_or_apply(variable, grad, learning_rate, is_update):
            accumulator = self._accumulated_gradients[self._get_variable_index(variable)]

            def apply():
                total = ops.divide(ops.add(accumulator.value, grad), steps)
                self.update_step(total, variable, learning_rate)
                self.assign(accumulator, ops.zeros_like(accumulator.value))

            def accumulate():
                self.assign_add(accumulator, grad)

            tf.cond(is_update, apply, accumulate)

        def cross_replica(distribution, grads_and_vars, learning_rate, is_update):
            for grad, variable in grads_and_vars:
                distribution.extended.update(
                    variable,
                    accumulate_or_apply,
                    args=(grad, learning_rate, is_update),
                    group=False,
                )

        # No synchronisation inside the cond: the merge call happens every micro-batch.
        tf.__internal__.distribute.interim.maybe_merge_call(
            cross_replica, self._distribution_strategy, grads_and_vars, learning_rate, is_update
        )

    def get_config(self):
        return {**super().get_config(), "param_rules": self.param_rules}
