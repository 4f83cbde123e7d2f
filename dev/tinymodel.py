#!/usr/bin/env python3
"""A tiny real GGUF model for llama.cpp, written at test time: nothing is downloaded.

Random weights in the llama architecture (2 layers, n_embd 64, 4 heads, n_ff 128, F32) and a
SentencePiece vocabulary of ``<unk> <s> </s>`` plus the 256 byte tokens, so any text tokenizes.
About 470 KB; llama-server loads it in milliseconds and generates real tokens. Its output layer
only knows the letters and the space, each leading to the next one (``a`` → ``b`` … ``z`` →
space → ``a``), so greedy decoding writes text such as ``"nopqrstu"``: a healthy answer to
the canary's garbage check, where purely random weights write bytes that are no UTF-8 text.

    ./dev/tinymodel.py PATH        # write it to PATH (as root, from any directory)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run alone, by any Python: in the checkout's venv (gguf, numpy)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import checkout
    checkout.use_venv()

import gguf  # noqa: E402
import numpy as np  # noqa: E402

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_CTX = 512
NAME = "tiny-llama"
SPECIAL = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: unknown, begin and end of sequence
N_VOCAB = len(SPECIAL) + 256
LETTERS = b"abcdefghijklmnopqrstuvwxyz "  # what it writes (fewer than N_EMBD: one axis each)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: the special tokens, then ``<0x00>`` … ``<0xFF>``."""
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens = [*SPECIAL, *(f"<0x{b:02X}>" for b in range(256))]
    types += [gguf.TokenType.BYTE] * 256
    return tokens, [0.0] * len(tokens), [int(t) for t in types]


def tensors(seed: int) -> dict[str, np.ndarray]:
    """Every weight llama.cpp's llama graph needs, as numpy arrays (rows, columns)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out = {"token_embd.weight": w(N_VOCAB, N_EMBD), "output_norm.weight": ones(N_EMBD),
           "output.weight": np.zeros((N_VOCAB, N_EMBD), dtype=np.float32)}
    for i, letter in enumerate(LETTERS):  # the embedding of a letter points at the next one
        this, following = (len(SPECIAL) + letter,
                           len(SPECIAL) + LETTERS[(i + 1) % len(LETTERS)])
        out["token_embd.weight"][this, i] = 1.0
        out["output.weight"][following, i] = 10.0
    for i in range(N_LAYER):
        b = f"blk.{i}"
        out.update({
            f"{b}.attn_norm.weight": ones(N_EMBD),
            f"{b}.attn_q.weight": w(N_EMBD, N_EMBD),
            f"{b}.attn_k.weight": w(N_EMBD, N_EMBD),
            f"{b}.attn_v.weight": w(N_EMBD, N_EMBD),
            f"{b}.attn_output.weight": w(N_EMBD, N_EMBD),
            f"{b}.ffn_norm.weight": ones(N_EMBD),
            f"{b}.ffn_gate.weight": w(N_FF, N_EMBD),
            f"{b}.ffn_up.weight": w(N_FF, N_EMBD),
            f"{b}.ffn_down.weight": w(N_EMBD, N_FF),
        })
    return out


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the model to ``path`` (the same bytes for the same seed) and return the path."""
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(NAME)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    for name, array in tensors(seed).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: dev/tinymodel.py PATH")
    print(write_tiny_model(Path(sys.argv[1])))
