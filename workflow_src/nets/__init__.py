"""The networks: what fixes an architecture (``spec``) and what the convolutional networks
share (``cnn_codes``); the networks themselves are in workflow_src/models.py (the MLP,
building, saving and loading any architecture) and workflow_src/cnns.py."""
