"""Deployment without a GPU: a trained stage model as a GGUF file for llama.cpp, Ollama and LM Studio.

    export.py       `shicheng export`: the files to write, in order (float file, quantised files, masters, Modelfile)
    gguf_export.py  our Qwen2 converter on the `gguf` package (why our own: see its docstring)
    quantize.py     llama.cpp's own quantiser through llama-cpp-python
    ollama.py       the Ollama Modelfile (our ChatML template as a Go template, stop tokens, defaults)
    metadata.py     the keys a shicheng GGUF carries (masters, decoding defaults) and how to read them back

It sits between train/ (whose model directories it reads) and agent/ (whose llama.cpp backend reads the
files it writes, through metadata.py). The `gguf` and `llama_cpp` packages (the `deploy` extra) are imported
by the functions that need them, so that importing this package costs nothing without them.
"""
