"""Inference: a checkpoint + media + a question -> an answer, in one process, sequence-parallel, or served.

    single.py     one process: `load_for_inference`, `encode_media`, `answer`, `answer_frames` (`longvila infer`)
    sp.py         sequence-parallel answering on every rank of an SP group: MM-SP frame encoding, sharded
                  prefill, greedy decoding against the sharded KV cache (`sp_answer_ids`, `sp_generate`,
                  `sp_greedy`, `sp_prefill`)
    sp_launch.py  `longvila infer --sp UxR`: its flags, and the local ranks it starts
    serve.py      `longvila serve`: an OpenAI-compatible chat-completions endpoint over single.py
    captioner.py  the `longvila` caption backend of stage-5 data (`LongVILACaptioner`, over single.py)

The parallel mechanisms these use (the sharded KV cache, decode attention and its log-sum-exp merge, the
sharded frame encoder) live in `longvila.parallel` (decode.py, mmsp.py); the models stay single-process.
Nothing is imported here: `from longvila.infer.single import answer`.
"""
