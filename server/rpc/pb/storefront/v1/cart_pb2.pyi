from server.rpc.pb.storefront.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceCartRequest(_message.Message):
    __slots__ = ("items", "promotion_code")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_CODE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.CartItem]
    promotion_code: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.CartItem, _Mapping]]] = ..., promotion_code: _Optional[str] = ...) -> None: ...

class PricedLine(_message.Message):
    __slots__ = ("product_id", "sku", "name", "quantity", "unit_price", "line_subtotal", "line_discount", "line_total", "variant_id", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    LINE_SUBTOTAL_FIELD_NUMBER: _ClassVar[int]
    LINE_DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    LINE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    product_id: int
    sku: str
    name: str
    quantity: int
    unit_price: int
    line_subtotal: int
    line_discount: int
    line_total: int
    variant_id: int
    options: _containers.ScalarMap[str, str]
    def __init__(self, product_id: _Optional[int] = ..., sku: _Optional[str] = ..., name: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price: _Optional[int] = ..., line_subtotal: _Optional[int] = ..., line_discount: _Optional[int] = ..., line_total: _Optional[int] = ..., variant_id: _Optional[int] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PricedCart(_message.Message):
    __slots__ = ("items", "subtotal", "discount", "tax", "total", "currency", "promotion_code")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SUBTOTAL_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    TAX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_CODE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PricedLine]
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str
    def __init__(self, items: _Optional[_Iterable[_Union[PricedLine, _Mapping]]] = ..., subtotal: _Optional[int] = ..., discount: _Optional[int] = ..., tax: _Optional[int] = ..., total: _Optional[int] = ..., currency: _Optional[str] = ..., promotion_code: _Optional[str] = ...) -> None: ...
