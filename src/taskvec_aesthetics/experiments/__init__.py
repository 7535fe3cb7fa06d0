"""The paper's protocol and analyses: the personalization benchmark, gains with more databases, their plots."""
