"""A publishable model collection: versioned SavedModels with model cards, laid out the way
TF Hub / Kaggle Models publish them.

```
<collection>/
  collection.json                         # index of the models below
  video_swin_b_kinetics400/
    1/                                    # the SavedModel (serving + Reusable SavedModel API)
    card.json  README.md                  # the model card, machine-readable and Markdown
  video_swin_b_kinetics400_feature_vector/
    1/  card.json  README.md
```

Cards are generated from the presets table (`keras_vswin.presets`: source, accuracy, protocol,
labels, licence) and from the export itself (signatures, input spec): nothing is written by
hand twice. `keras-vswin export SRC --collection DIR` writes a classifier and a feature vector.
"""

from __future__ import annotations

import hashlib
import json
import os

from keras_vswin import atomic, export
from keras_vswin.model import variant_of
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

CARD_FORMAT = "keras_vswin.model_card/1"
INDEX_FILE = "collection.json"
SOURCE_LICENCES = {
    "https://github.com/SwinTransformer/": "Apache-2.0 (SwinTransformer/Video-Swin-Transformer)",
    "https://download.pytorch.org/": "BSD-3-Clause (pytorch/vision)",
}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _architecture(model):
    from keras_vswin import convert

    arch = convert.model_architecture(model)
    keys = ("embed_dim", "depths", "num_heads", "patch_size", "window_size")
    described = {k: list(arch[k]) if isinstance(arch[k], tuple) else arch[k] for k in keys}
    described["variant"] = variant_of(arch)
    described["parameters"] = int(model.count_params())
    return described


def source_description(weights, variant):
    """What the card says about where the weights come from (registry names: the presets
    table; files: their name and SHA-256; None: random weights)."""
    from keras_vswin import weights as registry

    if weights is None:
        return {"kind": "random", "licence": "Apache-2.0 (keras-vswin)"}
    if isinstance(weights, str) and weights in registry.list_weights():
        info = registry.weights_info(weights, variant)
        licence = next(
            (text for prefix, text in SOURCE_LICENCES.items() if info["url"].startswith(prefix)),
            "see the source",
        )
        sha256 = info.get("sha256") or registry.recorded_source_sha256(weights, variant)
        return {
            "kind": "registry",
            "weights": weights,
            "description": info["description"],
            "url": info["url"],
            "filename": info["filename"],
            "sha256": sha256,
            "pretrain": info["pretrain"],
            "labels": info["labels"],
            "metrics": {
                "top1": info["top1"],
                "top5": info["top5"],
                "protocol": info["protocol"].to_dict(),
                "protocol_text": info["protocol"].describe(),
                "reported_by": "the authors (published accuracy, not re-measured here)",
            },
            "licence": licence,
        }
    path = os.fspath(weights)
    return {
        "kind": "file",
        "filename": os.path.basename(path),
        "sha256": _sha256(path) if os.path.isfile(path) else None,
        "licence": "that of the source file",
    }


def model_card(export_path, source, handle, architecture):
    """The model card of the export at `export_path` as a dict (see `card_markdown`)."""
    metadata, labels = export.read_export_metadata(export_path)
    flavour = metadata["flavour"]
    card = {
        "format": CARD_FORMAT,
        "handle": handle,
        "version": int(os.path.basename(os.path.normpath(export_path))),
        "flavour": flavour,
        "architecture": architecture,
        "source": source,
        "precision": metadata["precision"],
        "inputs": {
            "__call__": "float32 RGB clips [batch, frames, height, width, 3] in [0, 1], any size; "
            "normalised inside (Reusable SavedModel API, TF Hub convention)",
            **(
                {
                    "serving_default": "uint8 RGB video [batch, frames, height, width, 3]; "
                    "the view protocol's centre view is cut and normalised inside",
                    "serve_float": "float32 clips normalised with mean/std",
                    "serve_multiview": "uint8 RGB video; every view of the protocol",
                }
                if flavour == "classifier"
                else {"serving_default": "float32 clips normalised with mean/std"}
            ),
        },
        "outputs": (
            {"__call__": "logits [batch, classes]", "classes": metadata["classes"]}
            if flavour == "classifier"
            else {"__call__": "features [batch, channels]", "channels": metadata["feature_dim"]}
        ),
        "preprocessing": {"mean": list(MEAN_RGB), "std": list(STD_RGB), "range": "RGB 0-255"},
        "protocol": metadata["protocol"],
        "labels": {"file": "assets.extra/labels.txt", "count": len(labels)} if labels else None,
        "signatures": metadata["signatures"],
        "tensorflow_version": metadata["tensorflow_version"],
        "keras_version": metadata["keras_version"],
    }
    return card


def card_markdown(card):
    """The Markdown model card (README.md) for `card`."""
    source, arch = card["source"], card["architecture"] or {}
    handle = card["handle"]
    lines = [f"# {handle}", ""]
    if source["kind"] == "registry":
        lines += [source["description"], ""]
    lines += [
        f"- Flavour: {card['flavour'].replace('_', ' ')}; precision {card['precision']}.",
        f"- Architecture: Video Swin-{arch.get('variant') or 'custom'} (embed dim "
        f"{arch.get('embed_dim')}, depths {arch.get('depths')}, heads {arch.get('num_heads')}, "
        f"patch {arch.get('patch_size')}, window {arch.get('window_size')}), "
        f"{arch.get('parameters', 0):,} parameters.",
    ]
    if source["kind"] == "registry":
        metrics = source["metrics"]
        lines += [
            f"- Source: `{source['filename']}` ({source['url']}), SHA-256 "
            f"`{source['sha256'] or 'not recorded'}`; pretrained on {source['pretrain']}.",
            f"- Accuracy reported by the authors: top-1 {metrics['top1']}, top-5 "
            f"{metrics['top5']} ({metrics['protocol_text']}).",
            f"- Labels: {source['labels']} (`assets.extra/labels.txt`).",
        ]
    elif source["kind"] == "file":
        lines.append(f"- Source: `{source['filename']}`, SHA-256 `{source['sha256']}`.")
    lines += [
        f"- Licence: {source['licence']}.",
        f"- Preprocessing: RGB 0-255, mean {card['preprocessing']['mean']}, std "
        f"{card['preprocessing']['std']}; `__call__` takes RGB in [0, 1] and normalises inside.",
        "",
        "## Inputs and outputs",
        "",
        *(f"- `{name}`: {text}" for name, text in card["inputs"].items()),
        *(f"- output of `{k}`: {v}" for k, v in card["outputs"].items() if k == "__call__"),
        "",
        "## Use",
        "",
        "TF Hub (tf_keras), fine-tuning the whole backbone:",
        "",
        "```python",
        "import tensorflow_hub as hub, tf_keras",
        f'layer = hub.KerasLayer("{handle}/{card["version"]}", trainable=True)',
        "model = tf_keras.Sequential([tf_keras.Input((None, None, None, 3)), layer,",
        "                             tf_keras.layers.Dense(NUM_CLASSES)])",
        "```",
        "",
        "Keras 3 (any optimizer, AdamW included):",
        "",
        "```python",
        "from keras_vswin.export import ReusableLayer",
        f'layer = ReusableLayer("{handle}/{card["version"]}", trainable=True)',
        "```",
        "",
        "TF Serving: point `--model_base_path` at this folder (versions are numbered "
        "sub-folders); signatures: " + ", ".join(f"`{s}`" for s in card["signatures"]) + ".",
        "",
    ]
    return "\n".join(lines)


def write_model(model, collection, handle, source, feature_vector=False, **export_kwargs):
    """Exports `model` as `<collection>/<handle>/<version>/` with its card; returns the card."""
    path = export.export_saved_model(
        model, collection, name=handle, feature_vector=feature_vector, **export_kwargs
    )
    card = model_card(path, source, handle, _architecture(model))
    folder = os.path.join(collection, handle)
    atomic.write_json(os.path.join(folder, "card.json"), card)
    atomic.write_text(os.path.join(folder, "README.md"), card_markdown(card))
    _update_index(collection, card)
    return card


def _update_index(collection, card):
    index_path = os.path.join(collection, INDEX_FILE)
    index = {"format": "keras_vswin.collection/1", "models": {}}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    index["models"][card["handle"]] = {
        "version": card["version"],
        "flavour": card["flavour"],
        "card": f"{card['handle']}/card.json",
    }
    atomic.write_json(index_path, index)


def write_collection(model, collection, weights=None, variant=None, handle=None, **kwargs):
    """A classifier (when `model` has a head) and a feature-vector export of `model`, each
    with its card, under `collection`. Returns the cards."""
    source = source_description(weights, variant)
    base = handle or model.name + (f"_{weights}" if source["kind"] == "registry" else "")
    cards = []
    try:
        export.logits_function(model)
    except ValueError:  # no classification head: only the feature vector
        pass
    else:
        cards.append(write_model(model, collection, base, source, **kwargs))
    cards.append(write_model(model, collection, f"{base}_feature_vector", source, True, **kwargs))
    return cards
