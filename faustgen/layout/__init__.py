"""Plain data shared by the ops, the passes and the code generator: how weights are stored
for the C kernels (factor storage, packed panels and blocks, conv scratch sizes).

Nothing here imports the rest of faustgen."""
