"""Data stages: SQuAD examples (`squad`) and windowed model features (`features`).

Reads SQuAD files or hub ids; writes Arrow files in the datasets cache (see each module).
"""
