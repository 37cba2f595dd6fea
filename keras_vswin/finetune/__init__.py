"""Fine-tuning: the paper's recipe, `tf.distribute` and fault tolerance.

Building blocks (importable without running anything):
- `ParamGroupAdamW`, `recipe_param_rules`, `param_multipliers`, `describe_param_groups`
  (`finetune.optimizer`): AdamW with per-variable learning rates and weight decay.
- `WarmupCosineDecay` (`finetune.schedules`): the recipe's schedule.
- `resolve_batch`, `BatchPlan`, `scaled_learning_rate`, `make_strategy`, `is_chief`,
  `configure_cpu_replicas` (`finetune.distribute`).
- `TrainingBackup`, `AtomicModelCheckpoint`, `StopOnNonFiniteLoss`, `latest_checkpoint`
  (`finetune.callbacks`).
- `StrategyLoop` (`finetune.loop`): the training loop under any `tf.distribute` strategy
  (Keras' `fit` does not run under `MultiWorkerMirroredStrategy`).

Workflows: `finetune.train` (`keras-vswin train`), `finetune.evaluate` (`keras-vswin evaluate`),
their configs (`finetune.configs`) and `finetune.recipe` (config -> data, model, optimizer).

Example:

```python
import keras_vswin
from keras_vswin import finetune

model = keras_vswin.VideoSwinT(classes=10, weights="kinetics400", skip_head=True)
schedule = finetune.WarmupCosineDecay(1e-3, total_steps=30 * 500, warmup_steps=2.5 * 500)
optimizer = finetune.ParamGroupAdamW(
    schedule, weight_decay=0.02, param_rules=finetune.recipe_param_rules()
)
model.compile(optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
```
"""

from keras_vswin.finetune.callbacks import (
    AtomicModelCheckpoint,
    ResumePoint,
    StopOnNonFiniteLoss,
    TrainingBackup,
    latest_checkpoint,
)
from keras_vswin.finetune.distribute import (
    BatchPlan,
    configure_cpu_replicas,
    is_chief,
    make_strategy,
    resolve_batch,
    scaled_learning_rate,
)
from keras_vswin.finetune.loop import StrategyLoop
from keras_vswin.finetune.optimizer import (
    ParamGroupAdamW,
    describe_param_groups,
    param_multipliers,
    recipe_param_rules,
)
from keras_vswin.finetune.schedules import WarmupCosineDecay

__all__ = [
    "AtomicModelCheckpoint",
    "BatchPlan",
    "ParamGroupAdamW",
    "ResumePoint",
    "StopOnNonFiniteLoss",
    "StrategyLoop",
    "TrainingBackup",
    "WarmupCosineDecay",
    "configure_cpu_replicas",
    "describe_param_groups",
    "is_chief",
    "latest_checkpoint",
    "make_strategy",
    "param_multipliers",
    "recipe_param_rules",
    "resolve_batch",
    "scaled_learning_rate",
]
