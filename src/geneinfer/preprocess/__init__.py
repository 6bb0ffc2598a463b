"""geneinfer.preprocess"""
