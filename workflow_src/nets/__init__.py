"""The networks: what fixes an architecture (``spec``) and what the convolutional networks
share (``cnn_codes``); the networks themselves are in workflow_src/nets/models.py (the MLP,
building, saving and loading any architecture) and workflow_src/nets/cnns.py."""
