"""The shard writer's Beam executor: `keras-vswin write-shards ... --runner RUNNER [options]`.

`keras_vswin.data.write_shards` plans the run (reads the list, deals the videos to shards by a
hash of their path, finds the shards a previous run finished), writes the pending shard jobs as
JSON lines, and calls `run` here for any runner other than `local`, with its own functions:
`write(job)` is `write_shard`, the function the local process pool runs, and `finish` writes the
manifest. The pipeline:

```
jobs file --read, Reshuffle--> one element per pending shard
  --write(job)--> per-shard records (main output) + skipped videos (side output "skipped")
  --finish(records, skipped)--> <name>.manifest.json, with the shards of earlier runs
```

Each shard is one unit of work: its videos are encoded one after another (`encode_video`) and
streamed into a temporary file that is renamed when complete, so memory stays at one video, no
frame data goes through Beam's shuffle, and a retried or duplicated attempt (Beam retries failed
bundles) leaves the same bytes. A bad video never fails the pipeline: it goes to the `skipped`
output, which the manifest lists. A failed pipeline is resumed by running the same command again.

Workers read the videos and write the shards with `tf.io.gfile`, so inputs and output must be on
a filesystem that every worker reaches and TensorFlow knows (local paths for the local runners;
`gs://` on Dataflow; a shared mount or `gs://` on Flink and Spark). Every worker needs
keras-vswin installed: a worker image built from Beam's Python SDK image
(`--sdk_container_image` on Dataflow, `--environment_type DOCKER --environment_config IMAGE` on
Flink and Spark). Decoders run with one thread per worker process: Beam's workers are
one process per core.

Tests and small jobs use `FnApiRunner` (in-process; `--direct_num_workers 2
--direct_running_mode multi_processing` for two worker processes). `DirectRunner` first tries the
Prism runner, which downloads a binary on first use.
"""

from __future__ import annotations

import json

try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineState
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"--runner other than 'local' needs Apache Beam: pip install 'keras-vswin[beam]' ({error})"
    ) from error

SKIPPED = "skipped"
RECORDS = "records"
# Quiet Beam's own workers unless asked otherwise (they log every bundle at INFO).
DEFAULT_OPTIONS = {"default_sdk_harness_log_level": "WARNING"}


class PipelineFailed(RuntimeError):
    """The pipeline failed, was cancelled or did not finish."""


def read_jobs(path):
    """Yields the jobs of a JSON-lines file (any `tf.io.gfile` path)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


class ApplyWrite(beam.DoFn):
    """`write(job)` per element: the record to the main output, its `skipped` items to the
    `skipped` output."""

    def __init__(self, write):
        self.write = write

    def process(self, job):
        record = self.write(job)
        for item in record.get(SKIPPED, ()):
            yield beam.pvalue.TaggedOutput(SKIPPED, item)
        yield {key: value for key, value in record.items() if key != SKIPPED}


def _finish(_, records, skipped, finish):
    yield finish(list(records), list(skipped))


def build_pipeline(pipeline, jobs_file, write, finish):
    """Adds the transforms to `pipeline` (see the module docstring); returns `finish`'s
    PCollection (one element)."""
    written = (
        pipeline
        | "Pending jobs" >> beam.Create([jobs_file])
        | "Read jobs" >> beam.FlatMap(read_jobs)
        | "Spread over workers" >> beam.Reshuffle()
        | "Write shards" >> beam.ParDo(ApplyWrite(write)).with_outputs(SKIPPED, main=RECORDS)
    )
    return (
        pipeline
        | "Once" >> beam.Create([None])
        | "Finish"
        >> beam.FlatMap(
            _finish,
            beam.pvalue.AsList(written[RECORDS]),
            beam.pvalue.AsList(written[SKIPPED]),
            finish,
        )
    )


def pipeline_options(runner, pipeline_args=()):
    """`PipelineOptions` for `runner` from command-line style arguments, with our defaults."""
    args = list(pipeline_args)
    given = {arg.split("=", 1)[0].lstrip("-") for arg in args if arg.startswith("--")}
    for key, value in DEFAULT_OPTIONS.items():
        if key not in given:
            args.append(f"--{key}={value}")
    return PipelineOptions(args, runner=runner)


def check_runner(runner, pipeline_args=()):
    """Raises ValueError for an unknown runner or unusable options, before any work starts."""
    from apache_beam.runners.runner import create_runner

    pipeline_options(runner, pipeline_args)
    create_runner(runner)


def run(jobs_file, write, finish, runner, pipeline_args=()):
    """Runs `write(job)` for every job of `jobs_file` on Beam, then `finish(records, skipped)`
    once; waits until the pipeline is done.

    `write` and `finish` must be picklable (module-level functions or partials of them): they
    run on the workers. A job list in a file, not `beam.Create(jobs)`: 240,000 videos would bloat
    the job graph that some runners (Dataflow) limit in size.

    Raises:
        ValueError: an unknown runner or a bad pipeline option.
        PipelineFailed: the pipeline failed or did not finish.
    """
    pipeline = beam.Pipeline(options=pipeline_options(runner, pipeline_args))
    build_pipeline(pipeline, jobs_file, write, finish)
    try:
        state = pipeline.run().wait_until_finish()
    except Exception as error:  # noqa: BLE001 - any runner failure becomes one clear line
        lines = str(error).strip().splitlines()
        raise PipelineFailed(
            f"{type(error).__name__}: {lines[-1][:500] if lines else ''}".rstrip(": ")
        ) from error
    if state != PipelineState.DONE:
        raise PipelineFailed(f"the pipeline ended in state {state}")
