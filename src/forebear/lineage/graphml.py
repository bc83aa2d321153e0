"""A ``Lineage`` as GraphML (for Gephi, yEd, networkx): nodes with their family, directed
edges with the relation, the test and the direction's probabilities."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from forebear.lineage.tree import Lineage

__all__ = ["to_graphml"]

_NS = "http://graphml.graphdrawing.org/xmlns"
_NODE_KEYS = (("family", "int"),)
_EDGE_KEYS = (("relation", "string"), ("log10_p", "double"), ("distance", "double"),
              ("p_weights", "double"), ("p_priors", "double"), ("decided_by", "string"),
              ("attached_by", "string"), ("weight", "double"), ("reasons", "string"))  # fmt: skip


def to_graphml(found: Lineage) -> str:
    root = ET.Element("graphml", xmlns=_NS)
    for domain, keys in (("node", _NODE_KEYS), ("edge", _EDGE_KEYS)):
        for name, kind in keys:
            ET.SubElement(root, "key", id=f"{domain}.{name}", attrib={
                "for": domain, "attr.name": name, "attr.type": kind})  # fmt: skip
    graph = ET.SubElement(root, "graph", id="lineage", edgedefault="directed")
    for index, family in enumerate(found.families):
        for model in family:
            node = ET.SubElement(graph, "node", id=model)
            ET.SubElement(node, "data", key="node.family").text = str(index)
    for edge in found.edges:
        element = ET.SubElement(graph, "edge", source=edge.parent, target=edge.child)
        values = {
            "relation": edge.relation, "log10_p": edge.log10_p, "distance": edge.distance,
            "p_weights": edge.p_weights, "p_priors": edge.p_priors,
            "decided_by": edge.decided_by, "attached_by": edge.attached_by,
            "weight": edge.weight,
            "reasons": "; ".join(edge.reasons),
        }  # fmt: skip
        for name, value in values.items():
            if value is not None:
                ET.SubElement(element, "data", key=f"edge.{name}").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
