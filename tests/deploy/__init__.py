"""Tests of shicheng.deploy (GGUF export, quantisation, the Modelfile) and the llama.cpp backend."""
