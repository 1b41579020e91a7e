"""REST routes: one module per resource, each an APIRouter."""
