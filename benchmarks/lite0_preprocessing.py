"""Which normalisation the EfficientNet-Lite0 weights expect, checked on CIFAR-10 images.

    nice python benchmarks/lite0_preprocessing.py        # 100 images per class, ~8 minutes on 2 shared cores
    nice python benchmarks/lite0_preprocessing.py --per-class 20

The images are resized and centre-cropped as conr/encoders/lite0.py does (bicubic,
shorter side 256, crop 224), then normalised three ways: mean 0.5 / std 0.5 (pixels in
[-1, 1], the EfficientNet-Lite builder's mean 127 / std 128), ImageNet's mean and std,
and mean 0.5 / std 0.5 with the channels reversed (BGR). For each it reports

* how often the top-1 ImageNet class is a plausible one for the CIFAR class (horse ->
  sorrel; truck -> moving van, trailer truck, fire engine ...; dog -> any dog breed;
  the lists are below),
* the mean top-1 probability,
* the leave-one-out 10-nearest-neighbour accuracy (cosine) of the pooled features, a
  label-aware measure of how well the features separate the ten classes.

The normalisation the weights were trained with wins on all three; the numbers are in
conr/encoders/lite0.py's docstring.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from conr.encoders.extract import decode_for_encoder  # noqa: E402
from conr.encoders.lite0 import LITE0_PREPROCESS, build_lite0, embedded_lite0_weights, lite_to_timm  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "test"


def plausible_classes() -> dict[str, set[int]]:
    """CIFAR-10 class -> ImageNet class indices a sensible classifier may answer."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i).lower() for i in range(1000)]

    def named(*words):
        return {i for i, d in enumerate(names) if any(w in d.split(", ") or d.startswith(w) for w in words)}

    return {
        "airplane": named("airliner", "warplane", "airship", "wing", "space shuttle", "missile", "projectile"),
        "automobile": named("sports car", "convertible", "cab", "beach wagon", "minivan", "racer", "jeep",
                            "limousine", "car wheel", "grille", "pickup", "moving van", "police van", "ambulance",
                            "model t", "go-kart", "golfcart"),
        "bird": set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147)),
        "cat": set(range(281, 294)),
        "deer": set(range(348, 354)) | named("hartebeest", "impala", "gazelle", "ibex", "ram", "bighorn", "llama",
                                             "sorrel"),
        "dog": set(range(151, 269)),
        "frog": set(range(25, 33)),
        "horse": named("sorrel") | {339},
        "ship": named("yawl", "container ship", "liner", "fireboat", "speedboat", "lifeboat", "schooner",
                      "catamaran", "trimaran", "pirate", "wreck", "aircraft carrier", "submarine", "paddlewheel",
                      "gondola", "canoe", "dock"),
        "truck": named("moving van", "trailer truck", "fire engine", "garbage truck", "pickup", "tow truck", "tank",
                       "half track", "police van", "minivan", "jeep", "thresher", "harvester", "tractor"),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    model = build_lite0().eval()
    state = torch.load(embedded_lite0_weights(), map_location="cpu", weights_only=True)
    model.load_state_dict(lite_to_timm(state, model), strict=True)
    plausible = plausible_classes()
    classes = sorted(plausible)
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted((Path(args.data) / name).glob("*.jpg"))[: args.per_class]
        images += [torch.from_numpy(decode_for_encoder(f, LITE0_PREPROCESS)[0]) for f in files]
        labels += [c] * len(files)
    x = torch.stack(images).float() / 255
    y = np.array(labels)
    ways = {"mean 0.5, std 0.5": (x, (0.5,) * 3, (0.5,) * 3),
            "ImageNet mean/std": (x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            "mean 0.5, std 0.5, BGR": (x.flip(1), (0.5,) * 3, (0.5,) * 3)}
    print(f"{len(y)} CIFAR-10 test images; {'normalisation':24s} plausible-top1  mean-top1-prob  10-NN acc")
    for name, (inp, mean, std) in ways.items():
        xn = (inp - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        feats, probs = [], []
        with torch.inference_mode():
            for s in range(0, len(xn), 50):
                f = model.forward_head(model.forward_features(xn[s:s + 50]), pre_logits=True)
                feats.append(f)
                probs.append(model.classifier(f).softmax(1))
        f = torch.nn.functional.normalize(torch.cat(feats), dim=1)
        p = torch.cat(probs)
        top = p.argmax(1).numpy()
        hit = np.mean([top[i] in plausible[classes[y[i]]] for i in range(len(y))])
        sim = f @ f.T
        sim.fill_diagonal_(-2)
        nn_idx = sim.topk(10, dim=1).indices.numpy()
        knn = np.mean([np.bincount(y[nn_idx[i]], minlength=10).argmax() == y[i] for i in range(len(y))])
        print(f"{'':38s}{name:24s} {hit:14.3f} {float(p.max(1).values.mean()):15.3f} {knn:10.3f}")


if __name__ == "__main__":
    main()
