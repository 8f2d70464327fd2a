"""Device meshes and the logical-axis rules that map parameter axes onto them."""
