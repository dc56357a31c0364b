"""Amazon Bedrock through boto3's ``bedrock-runtime`` Converse API (the paper's teacher)."""

from __future__ import annotations

import time

from pgkd.teacher.base import (Backend, Message, Reply, SamplingParams, TeacherAuthError,
                               TeacherRequestError, TransientTeacherError)

TRANSIENT = {"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
             "ModelNotReadyException", "ModelTimeoutException", "TooManyRequestsException"}
AUTH = {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
        "InvalidSignatureException"}
CREDENTIALS_HINT = ("AWS credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "or an instance role) with bedrock:InvokeModel on the model, and model access "
                    "enabled in the region")


class BedrockBackend(Backend):
    """Credentials come from the AWS chain (env, profile, role); botocore's adaptive retry mode
    handles throttling first."""

    name = "bedrock"

    def __init__(self, model_id: str = "anthropic.claude-3-sonnet-20240229-v1:0",
                 region: str | None = None, profile: str | None = None, max_attempts: int = 8,
                 read_timeout_s: float = 300.0, client=None):
        self.model = model_id
        self.region, self.profile = region, profile
        self.max_attempts, self.read_timeout_s = max_attempts, read_timeout_s
        self._client = client

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.Session(profile_name=self.profile, region_name=self.region)
            self._client = session.client(
                "bedrock-runtime",
                config=Config(retries={"mode": "adaptive", "max_attempts": self.max_attempts},
                              read_timeout=self.read_timeout_s),
            )
        return self._client

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                         NoCredentialsError, ReadTimeoutError)

        request = {
            "modelId": self.model,
            "messages": [{"role": m.role, "content": [{"text": m.content}]} for m in messages if m.role != "system"],
            "inferenceConfig": {"maxTokens": params.max_tokens, "temperature": params.temperature},
        }
        system = [{"text": m.content} for m in messages if m.role == "system"]
        if system:
            request["system"] = system
        if params.top_p is not None:
            request["inferenceConfig"]["topP"] = params.top_p
        started = time.perf_counter()
        try:
            response = self.client().converse(**request)
        except NoCredentialsError as error:
            raise TeacherAuthError(f"bedrock: no AWS credentials found; set {CREDENTIALS_HINT}") from error
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", "")
            if code in AUTH:
                raise TeacherAuthError(f"bedrock: {code}: {message}; needs {CREDENTIALS_HINT}") from error
            if code in TRANSIENT:
                raise TransientTeacherError(f"bedrock: {code}: {message}") from error
            raise TeacherRequestError(f"bedrock: {code}: {message} (model {self.model})") from error
        except (ReadTimeoutError, BotoConnectionError) as error:
            raise TransientTeacherError(f"bedrock: {error}") from error
        except BotoCoreError as error:
            raise TransientTeacherError(f"bedrock: {error}") from error
        try:
            text = "".join(part.get("text", "") for part in response["output"]["message"]["content"])
            usage = response["usage"]
            return Reply(text=text, input_tokens=usage["inputTokens"], output_tokens=usage["outputTokens"],
                         latency_s=time.perf_counter() - started, model=self.model, backend=self.name)
        except (KeyError, TypeError) as error:
            raise TransientTeacherError(f"bedrock: malformed Converse response: missing {error}") from error
