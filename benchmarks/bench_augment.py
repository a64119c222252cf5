"""Train-pipeline augmentation throughput: images/s per loader worker at 224 px from 256-500 px JPEGs.

Run: python benchmarks/bench_augment.py [--images 200] [--size 224] [--json]
The measuring function is `deit.data.benchmark_augmentation` (importable, returns a dict).
"""

from __future__ import annotations

import argparse
import json
import platform

from deit.data import benchmark_augmentation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200, help="JPEGs to generate (default 200)")
    p.add_argument("--size", type=int, default=224, help="output crop size (default 224)")
    p.add_argument("--repeats", type=int, default=2, help="passes over the images (default 2)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = benchmark_augmentation(num_images=args.images, img_size=args.size, repeats=args.repeats)
    r["cpu"] = platform.processor() or platform.machine()
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"train augmentation ({r['auto_augment']}, erasing p={r['reprob']}), {r['img_size']} px output "
          f"from {r['source_sides'][0]}-{r['source_sides'][1]} px JPEGs, 1 thread:")
    print(f"  decode + augment: {r['images_per_s_per_worker']:.0f} images/s per worker "
          f"({r['ms_per_image']:.2f} ms/image, {r['images']} images, wall clock)")
    print(f"  decode + augment: {r['cpu_images_per_s_per_worker']:.0f} images/s per worker by CPU time "
          "(a core to itself)")
    print(f"  decode only:      {r['decode_only_images_per_s']:.0f} images/s")


if __name__ == "__main__":
    main()
