"""``neuroinspect classes``: list a dataset's class names and indices."""
from __future__ import annotations

from neuroinspect.cli.common import add_data_args


def register(sub) -> None:
    p = sub.add_parser("classes", help="list the classes (and groups, splits) of a dataset",
                       description="List the class names and indices of a dataset, its groups and its splits.")
    add_data_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from neuroinspect.core.data.load import load_data

    data = load_data(args.data, download=args.download, class_names=args.class_names)
    for i, name in enumerate(data.class_names):
        print(f"{i:>5}  {name}")
    sizes = ", ".join(f"{s}: {data.size(s)}" for s in data.splits)
    order = data.class_order or "alphabetical folders / natural CSV labels; give the model's order with --class-names"
    print(f"\n{len(data.class_names)} classes (order: {order}); splits: {sizes}")
    if data.group_names:
        print(f"groups: {', '.join(data.group_names)}")
    return 0
