"""CloudFormation stacks of SageMaker models, endpoint configs and endpoints.

``coldbrew deploy-stack`` and the CloudFormation API (``aws cloudformation deploy``) on the
gateway's port: a template is parsed (``template``), its parameters resolved (``parameters``) and
its intrinsic functions evaluated (``intrinsics``); a pure ``plan`` of creates, updates and deletes
is made from the stack's old and new state; the ``engine`` carries it out through the control
plane's own operations (``resources``), recording stacks and events durably (``store``).
"""
