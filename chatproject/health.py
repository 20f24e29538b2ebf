from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@require_GET
@never_cache
def healthz(request):
    """Liveness: 200 while the process serves requests; touches no backend."""
    return JsonResponse({"status": "ok"})
