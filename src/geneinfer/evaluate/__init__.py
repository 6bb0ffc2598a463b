"""geneinfer.evaluate"""
