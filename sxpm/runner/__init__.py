"""The runner: installed models and experts on the best local accelerator.

* :mod:`.detect` finds the accelerator (NVIDIA, AMD, Apple Metal, else CPU);
* :mod:`.plan` sizes ``n_gpu_layers`` and chooses among a model's variants;
* :mod:`.resolve` turns a name or reference into files, and checks an expert fits;
* :mod:`.session` is the loaded model behind ``sxpm.load`` and ``sxpm run``;
* :mod:`.server` serves it through llama-cpp-python's OpenAI-compatible server.

llama-cpp-python (the ``sxpm[run]`` extra) is imported only when a model is loaded.
"""
