"""plmkit-knowledge-pretraining: knowledge-bearing (K-B) and knowledge-free (K-F) tokens in continual pre-training
(Wang et al., "On Effectively Learning of Knowledge in Continual Pre-training", arXiv 2204.07994; v2: "Knowledgeable
Salient Span Mask for Enhancing Language Models as Knowledge Base", NLPCC 2023)."""
