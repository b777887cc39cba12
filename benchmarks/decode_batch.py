"""Would decoding several replies together pay on llama.cpp? Times one `llama_decode` step with 1, 2, 4 and 8
sequences in the batch (one new token each, all on a shared prompt), on the default GGUF model, through
llama.cpp's low-level API.

    flock /tmp/macsql-heavy.lock python benchmarks/decode_batch.py --threads 2

The pipeline asks for the direct and the decomposed query in one `generate` call, and for its sampled
candidates in another; the llama.cpp backend decodes them one after another today. Decoding on a CPU
reads every weight once per step whatever the number of sequences, so k sequences cost less than k steps
of one. How much less is what this measures. `--reply` sets the two replies' lengths (tokens) for the
projection in the last lines: one after the other, against together until the shorter one ends.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a GGUF model (default: the default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=600, help="the shared prompt's length")
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per batch size")
    ap.add_argument("--reply", default="72,103", help="two reply lengths for the projection")
    args = ap.parse_args(argv)

    import llama_cpp as lc

    from macsql import weights

    resolved = weights.resolve(args.model or weights.DEFAULT_MODEL)
    if not resolved.is_gguf:
        raise SystemExit(f"{resolved.path} is not a GGUF file; pass --model FILE.gguf")
    path = str(resolved.path)
    sizes = (1, 2, 4, 8)
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    if hasattr(mparams, "use_extra_bufts"):
        mparams.use_extra_bufts = False  # as the backend does on AMX builds (see LlamaCppLLM)
    model = lc.llama_model_load_from_file(path.encode(), mparams)
    cparams = lc.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = 4096, 512, 512
    cparams.n_seq_max, cparams.n_threads, cparams.n_threads_batch = max(sizes), args.threads, args.threads
    if hasattr(cparams, "kv_unified"):
        cparams.kv_unified = True  # one KV buffer that every sequence shares: copying a prompt is free
    ctx = lc.llama_init_from_model(model, cparams)
    memory = lc.llama_get_memory(ctx)
    batch = lc.llama_batch_init(512, 0, max(sizes))

    def put(i, token, pos, seq, logits):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
        batch.seq_id[i][0] = seq

    # A prompt of ordinary SQL-ish tokens; its content does not change the cost of a step.
    vocab = lc.llama_model_get_vocab(model)
    text = b"SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id WHERE T2.year > 2014; "
    ids = (lc.llama_token * 8192)()
    n_text = lc.llama_tokenize(vocab, text, len(text), ids, 8192, True, False)
    prompt = [ids[i % n_text] for i in range(args.prompt_tokens)]
    start = time.perf_counter()
    for lo in range(0, len(prompt), 512):
        chunk = prompt[lo:lo + 512]
        batch.n_tokens = len(chunk)
        for j, tok in enumerate(chunk):
            put(j, tok, lo + j, 0, lo + j == len(prompt) - 1)
        if lc.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed on the prompt")
    prefill = time.perf_counter() - start
    for seq in range(1, max(sizes)):
        lc.llama_memory_seq_cp(memory, 0, seq, -1, -1)

    step_s = {}
    for k in sizes:
        pos = len(prompt)
        start = time.perf_counter()
        for step in range(args.steps):
            batch.n_tokens = k
            for seq in range(k):
                put(seq, ids[(step + seq) % n_text], pos, seq, True)
            if lc.llama_decode(ctx, batch) != 0:
                raise SystemExit(f"llama_decode failed with {k} sequences")
            pos += 1
        step_s[k] = (time.perf_counter() - start) / args.steps
        for seq in range(max(sizes)):
            lc.llama_memory_seq_rm(memory, seq, len(prompt), -1)  # back to the shared prompt alone

    print(f"{path}\n{args.threads} threads; prompt {len(prompt)} tokens read in {prefill:.2f} s "
          f"({len(prompt) / prefill:.0f} tokens/s)\n")
    print("| sequences | ms per step | tokens/s (all sequences) | cost of a step vs one sequence |")
    print("|---|---|---|---|")
    for k in sizes:
        print(f"| {k} | {step_s[k] * 1000:.0f} | {k / step_s[k]:.1f} | {step_s[k] / step_s[1]:.2f}x |")
    short, long_ = sorted(int(x) for x in args.reply.split(","))
    apart = (short + long_) * step_s[1]
    together = short * step_s[2] + (long_ - short) * step_s[1]
    print(f"\nreplies of {short} and {long_} tokens: {apart:.1f} s one after the other, {together:.1f} s together "
          f"({apart / together:.2f}x)")
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
