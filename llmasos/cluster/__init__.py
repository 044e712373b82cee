"""The cluster: Ray nodes, the engines and tools they host as actors, and where the kernel places work.

Nothing here is imported unless a server runs with `--cluster` (or a node joins one): a single box
never imports Ray. The kernel sees a cluster only through the engine protocol (`ClusterEngine` is an
engine over every node that holds one model) and the placement interface (`node_of`).

- `secret`: the cluster secret a node proves it knows when it joins;
- `registry`: the head's table of nodes (a Ray actor), their capabilities, models and health;
- `remote_engine`: an `LLMEngine` in a Ray actor on a node, one call per step;
- `placement`: which node takes a new request (capability and model, then load, then prefix affinity);
- `cluster_engine`: one model over the nodes that hold it, with failover;
- `tools`: OCR, transcription, speech and embeddings as actors on the nodes that have them;
- `runtime`: starting a Ray head, joining a node, connecting a server.
"""
