"""``coldbrew tune``: deploy a model at several memory sizes, measure, price, recommend one."""
